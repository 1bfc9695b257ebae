"""cert-manager CertificateRequests (cert-manager.io/v1) for Signet's issuers: Signet as a
cert-manager external issuer.

The request path is the one every path shares: gates and policy
(`signet.decisions.certificaterequest`, which judges the request as a Signet Certificate of
its namespace) -> sign once through the issuer's KMS key, audited the moment KMS answers ->
deliver (one PUT of ``status.certificate``, ``status.ca`` and Ready=True to the request's
/status) -> a delivery record -> the next look on the one work queue. The life cycle around
the decision is the other requests' too (`signet.controller.answering`); what is
cert-manager's own is here: the Ready condition with cert-manager's reasons (Issued,
Pending, Failed, Denied), ``status.failureTime`` on a final refusal so cert-manager backs
off before it asks again, and the owning cert-manager Certificate in the audit record.

The watch exists only where cert-manager's CRDs do; kopf starts it when they appear
(Signet already watches CRDs), so cert-manager may be installed before or after Signet.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet import issuance
from signet.api.certificate import MIN_DURATION
from signet.api.times import timestamp
from signet.controller.answering import IssuerLookup, RequestController, Signed, Standing
from signet.controller.kubeapi import Obj
from signet.decisions import certificaterequest as cr
from signet.decisions import csr
from signet.pki.request import LeafRequest
from signet.reasons import Reason

RequestId = tuple[str, str]
"""(namespace, name) of a CertificateRequest."""
KIND = cr.KIND
KEEP_SHARE = 1 / 3
"""A certificate kept for a write that failed is written later only while less than this
share of its lifetime has passed; an older one is signed anew."""
PENDING = "Pending"
"""cert-manager's Ready reason while the issuer cannot sign yet."""


def ready_condition(
    current: Obj, status: str, reason: str, message: str, now: datetime.datetime
) -> Obj:
    """cert-manager's Ready condition; its transition time moves only when its status
    does, as cert-manager's own controllers keep it."""
    previous = cr.conditions(current).get("Ready") or {}
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": since or timestamp(now),
    }


class CertificateRequestController(
    RequestController[RequestId, cr.CertificateRequest, cr.CertificateRequestPlan]
):
    """Answers approved cert-manager CertificateRequests whose issuerRef names a Signet
    issuer."""

    KIND: ClassVar[str] = KIND
    API_VERSION: ClassVar[str] = cr.API_VERSION
    PURPOSE: ClassVar[str] = "cert-manager-certificate-request"
    MINIMUM: ClassVar[datetime.timedelta] = MIN_DURATION
    UNREADABLE: ClassVar[str] = "Failed"
    EVENT_WHILE_WAITING: ClassVar[bool] = False
    """The Ready condition says Pending, and why."""

    def _ours(self, body: Obj) -> bool:
        return cr.is_ours(body)

    def _ident(self, body: Obj) -> RequestId:
        metadata = body["metadata"]
        return (metadata["namespace"], metadata["name"])

    def _label(self, ident: RequestId) -> str:
        return f"{ident[0]}/{ident[1]}"

    def _standing(self, body: Obj) -> Standing:
        """Requests not approved (or denied) yet wait for the approver's event."""
        phase = cr.phase(body)
        if phase is cr.Phase.DONE:
            return Standing.ANSWERED
        if phase is cr.Phase.PENDING:
            return Standing.LEFT
        return Standing.OPEN

    def _parse(self, body: Obj) -> cr.CertificateRequest:
        return cr.parse_request(body)

    def _requester_namespace(self, ident: RequestId, request: cr.CertificateRequest) -> str:
        return ident[0]

    def _decide(
        self, request: cr.CertificateRequest, found: IssuerLookup, now: datetime.datetime
    ) -> cr.CertificateRequestDecision:
        return cr.decide(
            request,
            found.state,
            namespace_labels=found.namespace_labels,
            issuer_absent=found.absent,
        )

    def _leaf(self, plan: cr.CertificateRequestPlan) -> tuple[PublicKeyTypes, LeafRequest]:
        return plan.public_key, plan.leaf

    def _subject(self, request: cr.CertificateRequest) -> dict[str, Any]:
        return {
            "certificateRequest": {
                "namespace": request.namespace,
                "name": request.name,
                "uid": request.uid,
            }
        }

    def _audit_fields(
        self, request: cr.CertificateRequest, plan: cr.CertificateRequestPlan
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "usages": list(plan.leaf.usages),
            "keyAlgorithm": plan.key_algorithm,
        }
        if request.certificate is not None:
            name, uid = request.certificate
            fields["certManagerCertificate"] = {
                "namespace": request.namespace,
                "name": name,
                **({"uid": uid} if uid else {}),
            }
        return fields

    def _keep_for(self, lifetime: datetime.timedelta) -> datetime.timedelta:
        return lifetime * KEEP_SHARE

    def _issued(
        self, body: Obj, signed: Signed[RequestId], material: issuance.IssuerMaterial
    ) -> tuple[Obj, str]:
        leaf = signed.leaf
        assert material.chain is not None  # a leaf was signed under it
        anchor = material.chain.trust_anchor.public_bytes(serialization.Encoding.PEM)
        message = (
            f"issued serial {leaf.serial} by {material.spec.ref}, valid until "
            f"{timestamp(leaf.not_after)}"
        )
        current = body.get("status") or {}
        status = {
            **current,
            "certificate": base64.b64encode(leaf.chain_pem).decode(),
            "ca": base64.b64encode(anchor).decode(),
            "conditions": self._with_ready(
                current, ready_condition(current, "True", "Issued", message, self._clock())
            ),
        }
        return status, message

    def _refused(self, body: Obj, type_: str, reason: Reason, message: str) -> Obj:
        """Final: Ready=False with cert-manager's reason (Failed, or Denied for a request an
        approver denied) and failureTime, after which cert-manager backs off before it
        makes a new request. The message leads with Signet's reason."""
        current = body.get("status") or {}
        now = self._clock()
        ready = ready_condition(current, "False", type_, f"{reason}: {message}", now)
        return {
            **current,
            "conditions": self._with_ready(current, ready),
            "failureTime": timestamp(now),
        }

    def _waiting(self, body: Obj, reason: Reason, message: str) -> Obj | None:
        """Ready=False, Pending, saying why; nothing to write when it already says so."""
        current = body.get("status") or {}
        text = f"{reason}: {message}"
        previous = cr.conditions(body).get("Ready") or {}
        if (previous.get("status"), previous.get("reason"), previous.get("message")) == (
            "False",
            PENDING,
            text[:1024],
        ):
            return None
        ready = ready_condition(current, "False", PENDING, text, self._clock())
        return {**current, "conditions": self._with_ready(current, ready)}

    @staticmethod
    def _with_ready(current: Obj, ready: Obj) -> list[Obj]:
        """The conditions with Ready replaced; Approved and Denied stay as the approver
        wrote them."""
        others = [c for c in current.get("conditions") or [] if c.get("type") != "Ready"]
        return [*others, ready]

    def _chain_in(self, body: Obj) -> bytes:
        return csr.certificate_of(body)  # the same field, base64 PEM

    async def _get(self, ident: RequestId) -> Obj | None:
        return await self._api.get_certificate_request(*ident)

    async def _put_status(self, ident: RequestId, desired: Obj) -> Obj:
        written: Obj = await self._api.update_certificate_request_status(*ident, desired)
        return written

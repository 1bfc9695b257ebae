"""CertificateSigningRequests (certificates.k8s.io/v1) of Signet's signers.

The request path is the one every path shares: gates and policy (`signet.decisions.csr`,
which reuses `signet.decisions.gates` and `signet.policy`) -> sign once through the
issuer's KMS key, audited the moment KMS answers (`signet.issuance`) -> deliver (one PUT
of ``status.certificate`` to the request's /status) -> a delivery record -> the next look
on the one work queue. The life cycle around the decision is the PodCertificateRequests'
too (`signet.controller.answering`); what is the CSRs' own is here.

Approval is Kubernetes' business: a request is looked at only once it is Approved, and
never again once it carries a certificate or is Denied or Failed (status.certificate is
immutable), so a restart signs nothing twice. A refusal is the ``Failed`` condition,
naming the field and the rule, added beside the approval.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet import issuance
from signet.api.issuer import MIN_CSR_DURATION
from signet.api.times import timestamp
from signet.controller.answering import (
    IssuerLookup,
    RequestController,
    Signed,
    Standing,
    condition,
    wall_clock,
)
from signet.controller.issuers import IssuerController
from signet.controller.kubeapi import KubeApi, Obj
from signet.decisions import csr
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki.request import LeafRequest
from signet.reasons import Reason

KIND = "CertificateSigningRequest"
KEEP_SHARE = 1 / 3
"""A certificate kept for a write that failed is written later only while less than this
share of its lifetime has passed; an older one is given up and signed anew, rather than
handed out with most of its life already spent."""


class CsrController(RequestController[str, csr.CsrRequest, csr.CsrPlan]):
    """Answers approved CertificateSigningRequests for Signet's signers. A request is
    identified by its name (they are cluster-scoped)."""

    KIND: ClassVar[str] = KIND
    PURPOSE: ClassVar[str] = "certificate-signing-request"
    MINIMUM: ClassVar[datetime.timedelta] = MIN_CSR_DURATION
    UNREADABLE: ClassVar[str] = "Failed"
    EVENT_WHILE_WAITING: ClassVar[bool] = True
    """The request says nothing meanwhile (its status has no condition for it), so a
    Warning Event does (repeats fold into one)."""

    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
        audit: AuditLog,
        issuers: IssuerController,
        *,
        schedule: Callable[[str, float], None],
        namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
        serves: Callable[[str | None], bool] = lambda namespace: True,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime.datetime] = wall_clock,
    ) -> None:
        super().__init__(
            api,
            events,
            audit,
            issuers,
            schedule=schedule,
            namespace_labels=namespace_labels,
            metrics=metrics,
            clock=clock,
        )
        self._serves = serves

    def _ident(self, body: Obj) -> str:
        name: str = body["metadata"]["name"]
        return name

    def _label(self, ident: str) -> str:
        return ident

    def _standing(self, body: Obj) -> Standing:
        """Requests of namespaces this process does not serve are another installation's;
        requests not approved yet wait for their approval's event."""
        spec = body.get("spec") or {}
        signer = str(spec.get("signerName") or "")
        if not self._serves(csr.home_namespace(signer, str(spec.get("username") or ""))):
            return Standing.LEFT
        phase = csr.phase(body)
        if phase is csr.Phase.DONE:
            return Standing.ANSWERED
        if phase is csr.Phase.PENDING:
            return Standing.LEFT
        return Standing.OPEN

    def _parse(self, body: Obj) -> csr.CsrRequest:
        return csr.parse_request(body)

    def _requester_namespace(self, ident: str, request: csr.CsrRequest) -> str | None:
        account = csr.service_account(request.username)
        return account[0] if account else None

    def _decide(
        self, request: csr.CsrRequest, found: IssuerLookup, now: datetime.datetime
    ) -> csr.CsrDecision:
        return csr.decide(
            request,
            found.state,
            namespace_labels=found.namespace_labels,
            issuer_absent=found.absent,
        )

    def _leaf(self, plan: csr.CsrPlan) -> tuple[PublicKeyTypes, LeafRequest]:
        return plan.public_key, plan.leaf

    def _subject(self, request: csr.CsrRequest) -> dict[str, Any]:
        return {"certificateSigningRequest": {"name": request.name, "uid": request.uid}}

    def _audit_fields(self, request: csr.CsrRequest, plan: csr.CsrPlan) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "requester": {
                "username": request.username,
                "uid": request.user_uid,
                "groups": list(request.groups),
            },
            "usages": list(plan.leaf.usages),
        }
        if plan.service_account is not None:
            namespace, account = plan.service_account
            fields["serviceAccount"] = {"namespace": namespace, "name": account}
        return fields

    def _keep_for(self, lifetime: datetime.timedelta) -> datetime.timedelta:
        return lifetime * KEEP_SHARE

    def _issued(
        self, body: Obj, signed: Signed[str], material: issuance.IssuerMaterial
    ) -> tuple[Obj, str]:
        leaf = signed.leaf
        status = {
            **(body.get("status") or {}),
            "certificate": base64.b64encode(leaf.chain_pem).decode(),
        }
        message = (
            f"issued serial {leaf.serial} by {material.spec.ref}, valid until "
            f"{timestamp(leaf.not_after)}"
        )
        return status, message

    def _refused(self, body: Obj, type_: str, reason: Reason, message: str) -> Obj:
        """Beside the approval, which stays; an earlier condition of ``type_`` is replaced."""
        current = body.get("status") or {}
        conditions = [c for c in current.get("conditions") or [] if c.get("type") != type_]
        return {
            **current,
            "conditions": [*conditions, condition(type_, reason, message, self._clock())],
        }

    def _chain_in(self, body: Obj) -> bytes:
        return csr.certificate_of(body)

    async def _get(self, ident: str) -> Obj | None:
        return await self._api.get_certificate_signing_request(ident)

    async def _put_status(self, ident: str, desired: Obj) -> Obj:
        written: Obj = await self._api.update_certificate_signing_request_status(ident, desired)
        return written

"""PodCertificateRequests: Kubernetes' own certificate requests, answered by Signet's issuers.

The request path is the one every path shares: gates and policy
(`signet.decisions.podcertificate`, which reuses `signet.decisions.gates`) -> sign once
through the issuer's KMS key, audited the moment KMS answers (`signet.issuance`) -> deliver
(one PUT to the request's /status) -> a delivery record -> the next look on the one work
queue. The life cycle around the decision is the CertificateSigningRequests' too
(`signet.controller.answering`); what is the pods' own is here: the request's namespace,
its Denied condition, the key of a request an older kubelet made through v1beta1, the
kubelet's refresh time in the status, and the pod, node and ServiceAccount in the audit
record.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet import issuance
from signet.api.issuer import MIN_POD_CERTIFICATE_DURATION
from signet.api.times import timestamp
from signet.controller.answering import (
    IssuerLookup,
    RequestController,
    Signed,
    Standing,
    condition,
)
from signet.controller.kubeapi import Obj
from signet.decisions import podcertificate as pc
from signet.pki.request import LeafRequest
from signet.reasons import Reason

RequestId = tuple[str, str]
"""(namespace, name) of a PodCertificateRequest."""
KIND = "PodCertificateRequest"

FRESH_FOR = datetime.timedelta(minutes=4)
"""How long a signed, unwritten certificate may wait for its write: the apiserver wants
notBefore close to its own clock, so an older one is given up and signed anew."""


class PodCertificateController(RequestController[RequestId, pc.PodRequest, pc.SigningPlan]):
    """Answers PodCertificateRequests for Signet's signers."""

    KIND: ClassVar[str] = KIND
    PURPOSE: ClassVar[str] = "pod-certificate"
    MINIMUM: ClassVar[datetime.timedelta] = MIN_POD_CERTIFICATE_DURATION
    UNREADABLE: ClassVar[str] = "Denied"
    EVENT_WHILE_WAITING: ClassVar[bool] = False
    """The kubelet keeps the pod waiting and says so itself."""

    def _ident(self, body: Obj) -> RequestId:
        metadata = body["metadata"]
        return (metadata["namespace"], metadata["name"])

    def _label(self, ident: RequestId) -> str:
        return f"{ident[0]}/{ident[1]}"

    def _standing(self, body: Obj) -> Standing:
        return Standing.ANSWERED if pc.answered(body) else Standing.OPEN

    def _parse(self, body: Obj) -> pc.PodRequest:
        return pc.parse_request(body)

    def _requester_namespace(self, ident: RequestId, request: pc.PodRequest) -> str:
        return ident[0]

    def _decide(
        self, request: pc.PodRequest, found: IssuerLookup, now: datetime.datetime
    ) -> pc.PodDecision:
        return pc.decide(
            request,
            found.state,
            namespace_labels=found.namespace_labels,
            now=now,
            issuer_absent=found.absent,
        )

    def _leaf(self, plan: pc.SigningPlan) -> tuple[PublicKeyTypes, LeafRequest]:
        leaf = LeafRequest(
            spiffe_id=plan.spiffe_id,
            dns_names=plan.dns_names,
            usages=pc.USAGES,
            duration=plan.lifetime,
        )
        return plan.public_key, leaf

    def _subject(self, request: pc.PodRequest) -> dict[str, Any]:
        return {
            "podCertificateRequest": {
                "namespace": request.namespace,
                "name": request.name,
                "uid": request.uid,
            }
        }

    def _audit_fields(self, request: pc.PodRequest, plan: pc.SigningPlan) -> dict[str, Any]:
        namespace = request.namespace
        return {
            "keyType": plan.key_type,
            "pod": {"namespace": namespace, "name": request.pod_name, "uid": request.pod_uid},
            "serviceAccount": {
                "namespace": namespace,
                "name": request.service_account_name,
                "uid": request.service_account_uid,
            },
            "node": {"name": request.node_name, "uid": request.node_uid},
        }

    def _keep_for(self, lifetime: datetime.timedelta) -> datetime.timedelta:
        return FRESH_FOR

    def _issued(
        self, body: Obj, signed: Signed[RequestId], material: issuance.IssuerMaterial
    ) -> tuple[Obj, str]:
        leaf = signed.leaf
        message = (
            f"issued {leaf.spiffe_id} serial {leaf.serial}, valid until {timestamp(leaf.not_after)}"
        )
        issued = condition("Issued", Reason.ISSUED, message, self._clock())
        refresh = pc.begin_refresh_at(signed.uid, leaf.not_before, leaf.not_after)
        status: Obj = {
            "certificateChain": leaf.chain_pem.decode(),
            "notBefore": timestamp(leaf.not_before),
            "notAfter": timestamp(leaf.not_after),
            "beginRefreshAt": timestamp(refresh),
            "conditions": [issued],
        }
        return status, issued["message"]

    def _refused(self, body: Obj, type_: str, reason: Reason, message: str) -> Obj:
        return {"conditions": [condition(type_, reason, message, self._clock())]}

    def _chain_in(self, body: Obj) -> bytes:
        chain = (body.get("status") or {}).get("certificateChain") or ""
        return str(chain).encode()

    async def _readable(self, ident: RequestId, body: Obj) -> Obj:
        """A kubelet older than v1.36 asks through v1beta1 with ``pkixPublicKey`` (and a
        proof of possession the apiserver checked) instead of the stub CSR; v1 has no
        field for that key, so such a request is read again through v1beta1 where the
        apiserver serves it."""
        if (body.get("spec") or {}).get("stubPKCS10Request"):
            return body
        beta = await self._api.get_pod_certificate_request(*ident, version="v1beta1")
        key = ((beta or {}).get("spec") or {}).get("pkixPublicKey")
        return {**body, "spec": {**body["spec"], "pkixPublicKey": key}} if key else body

    async def _get(self, ident: RequestId) -> Obj | None:
        return await self._api.get_pod_certificate_request(*ident)

    async def _put_status(self, ident: RequestId, desired: Obj) -> Obj:
        written: Obj = await self._api.update_pod_certificate_request_status(*ident, desired)
        return written

"""PodCertificateRequests: Kubernetes' own certificate requests, answered by Signet's issuers.

The request path is the one every path shares: gates and policy
(`signet.decisions.podcertificate`, which reuses `signet.decisions.gates`) -> sign once
through the issuer's KMS key, audited the moment KMS answers (`signet.issuance`) -> deliver
(one PUT to the request's /status) -> a delivery record -> the next look on the one work
queue. A request is answered exactly once: its status is immutable, so one that carries an
answer is never touched again (after a restart too), and a certificate signed on an
attempt whose write failed is kept and written on the next attempt rather than signed
again.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from signet import issuance
from signet.api.issuer import MIN_POD_CERTIFICATE_DURATION
from signet.api.times import timestamp
from signet.controller.answering import (
    NO_ISSUER,
    Answers,
    Retries,
    condition,
    look_up_issuer,
)
from signet.controller.issuers import IssuerController, IssuerId
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.signing import Ledger
from signet.decisions import podcertificate as pc
from signet.kms.errors import KmsError
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import kmskey
from signet.reasons import Reason

logger = logging.getLogger(__name__)

RequestId = tuple[str, str]
"""(namespace, name) of a PodCertificateRequest."""
KIND = "PodCertificateRequest"

FRESH_FOR = datetime.timedelta(minutes=4)
"""How long a signed, unwritten certificate may wait for its write: the apiserver wants
notBefore close to its own clock, so an older one is given up and signed anew."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Signed:
    """A certificate signed for a request and not yet written to its status."""

    request: RequestId
    uid: str
    key_version: str
    leaf: issuance.IssuedLeaf
    begin_refresh_at: datetime.datetime

    @property
    def signature(self) -> str:
        return self.leaf.signature

    @property
    def serial(self) -> str:
        return self.leaf.serial

    def subject(self) -> dict[str, Any]:
        namespace, name = self.request
        return {"podCertificateRequest": {"namespace": namespace, "name": name, "uid": self.uid}}


class PodCertificateController:
    """Answers PodCertificateRequests for Signet's signers; the runtime forwards watch
    events and queue keys to it."""

    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
        audit: AuditLog,
        issuers: IssuerController,
        *,
        schedule: Callable[[RequestId, float], None],
        namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
        metrics: Metrics | None = None,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = api
        self._events = events
        self._audit = audit
        self._issuers = issuers
        self._schedule = schedule
        self._namespace_labels = namespace_labels
        self._clock = clock
        self.pending: dict[RequestId, Obj] = {}
        self._retries: Retries[RequestId] = Retries(schedule, clock)
        self._answers: Answers[RequestId] = Answers(KIND, metrics)
        self._signed: Ledger[RequestId, Signed] = Ledger(audit)

    # -- watch input ----------------------------------------------------------------------
    def observe(self, body: Obj, deleted: bool) -> RequestId | None:
        """Take a watch event; return the request if it needs a pass. Requests for other
        signers and requests already answered are dropped here, from the event alone."""
        spec = body.get("spec") or {}
        if not pc.is_ours(str(spec.get("signerName") or "")):
            return None
        metadata = body["metadata"]
        ident: RequestId = (metadata["namespace"], metadata["name"])
        if deleted:
            self._forget(ident, "the request was deleted")
            return None
        if pc.answered(body):
            self._forget(ident, "it was answered", body)
            return None
        self.pending[ident] = body
        self._answers.seen(ident)
        if self._retries.backing_off(ident):
            return None  # its retry is scheduled; our own events must not start it early
        return ident

    def on_issuer_change(self, issuer: IssuerId) -> None:
        """An issuer became ready, changed or went away: requests waiting on it look again
        now rather than at the end of their backoff."""
        self._retries.issuer_changed(issuer)

    def _forget(self, ident: RequestId, why: str, answered: Obj | None = None) -> None:
        """Done with the request. A certificate still kept for it is accounted for: written
        if the answer is ours (its write succeeded though we have not heard back yet, or
        its answer was lost), else discarded."""
        self.pending.pop(ident, None)
        self._retries.forget(ident)
        self._answers.forget(ident)
        kept = self._signed.get(ident)
        chain = ((answered or {}).get("status") or {}).get("certificateChain") or ""
        if kept is not None and chain == kept.leaf.chain_pem.decode():
            assert answered is not None
            self._signed.written(
                ident,
                target=f"PodCertificateRequest {ident[0]}/{ident[1]}",
                resourceVersion=answered["metadata"].get("resourceVersion"),
            )
            return
        self._signed.discard(ident, "Superseded", f"not written: {why}")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, ident: RequestId) -> None:
        """One pass; whatever goes wrong ends in a retry on the backoff schedule."""
        body = self.pending.pop(ident, None)
        try:
            if body is None:
                body = await self._api.get_pod_certificate_request(*ident)
                if body is None:
                    self._forget(ident, "the request was deleted")
                    return
            if pc.answered(body):
                self._forget(ident, "it was answered", body)
                return
            self._answers.seen(ident)
            await self._pass(ident, body)
        except Exception as error:
            if not isinstance(error, ApiError):
                logger.exception("PodCertificateRequest %s/%s: pass failed", *ident)
            failure = self._retries.failed(ident)
            logger.warning(
                "PodCertificateRequest %s/%s: %s; next attempt at %s",
                *ident,
                error,
                timestamp(failure.next_retry),
            )

    async def _pass(self, ident: RequestId, body: Obj) -> None:
        now = self._clock()
        try:
            request = pc.parse_request(body)
        except ValueError as error:
            await self._answer(ident, body, "Denied", Reason.INVALID_REQUEST, str(error))
            return
        target = pc.issuer_of(request.signer_name)
        found = NO_ISSUER
        if target is not None and not (target[0] == "Issuer" and target[1] != ident[0]):
            looked = await look_up_issuer(
                self._api, self._issuers, target, ident[0], self._namespace_labels
            )
            if looked is None:  # seen, not resolved yet: its resolution wakes us
                self._retries.wait_for(target, ident)
                return
            found = looked
        state = found.state
        decision = pc.decide(
            request,
            state,
            namespace_labels=found.namespace_labels,
            now=now,
            issuer_absent=found.absent,
        )
        if decision.action is pc.Action.DENY:
            await self._answer(ident, body, "Denied", decision.reason, decision.message)
        elif decision.action is pc.Action.FAIL:
            await self._answer(ident, body, "Failed", decision.reason, decision.message)
        elif decision.action is pc.Action.WAIT:
            assert target is not None
            await self._wait(ident, body, request, decision.reason, decision.message, target)
        else:
            assert decision.plan is not None and state is not None
            assert state.material is not None and target is not None
            await self._issue(ident, body, request, state.material, decision.plan, target)

    async def _wait(
        self,
        ident: RequestId,
        body: Obj,
        request: pc.PodRequest,
        reason: Reason,
        message: str,
        issuer: IssuerId,
    ) -> None:
        """A transient problem: retry on the backoff schedule (sooner if the issuer
        changes), until the request is too old to be worth answering."""
        verdict = pc.waiting(request, reason, message, self._clock())
        if verdict.action is pc.Action.FAIL:
            await self._answer(ident, body, "Failed", verdict.reason, verdict.message)
            return
        self._retries.wait_for(issuer, ident)
        failure = self._retries.failed(ident)
        logger.warning(
            "PodCertificateRequest %s/%s: %s: %s; next attempt at %s",
            *ident,
            reason,
            message,
            timestamp(failure.next_retry),
        )

    async def _issue(
        self,
        ident: RequestId,
        body: Obj,
        request: pc.PodRequest,
        material: issuance.IssuerMaterial,
        plan: pc.SigningPlan,
        issuer: IssuerId,
    ) -> None:
        signed = self._usable(ident, request.uid, material)
        if signed is None:
            try:
                signed = await self._sign(request, material, plan)
            except KmsError as error:
                self._issuers.note_kms_error(error)
                await self._wait(ident, body, request, error.reason, str(error), issuer)
                return
            except kmskey.SignatureSpentError as error:
                await self._wait(ident, body, request, Reason.INTERNAL_ERROR, str(error), issuer)
                return
            except ValueError as error:
                await self._answer(ident, body, "Failed", Reason.INVALID_REQUEST, str(error))
                return
            self._signed.keep(ident, signed)
        leaf = signed.leaf
        status: Obj = {
            "certificateChain": leaf.chain_pem.decode(),
            "notBefore": timestamp(leaf.not_before),
            "notAfter": timestamp(leaf.not_after),
            "beginRefreshAt": timestamp(signed.begin_refresh_at),
            "conditions": [
                condition(
                    "Issued",
                    Reason.ISSUED,
                    f"issued {leaf.spiffe_id} serial {leaf.serial}, valid until "
                    f"{timestamp(leaf.not_after)}",
                    self._clock(),
                )
            ],
        }
        target = f"PodCertificateRequest {ident[0]}/{ident[1]}"
        seen = self._answers.first_seen(ident)
        try:
            written = await self._write_status(ident, body, status)
        except ApiError as error:
            self._signed.write_failed(ident, signed, error, target=target)
            raise
        if written is None:
            return
        self._retries.succeeded(ident)
        self._answers.answered(ident, "Issued", Reason.ISSUED, seen)
        # Says nothing if the watch saw the answer first and accounted for it.
        self._signed.written(
            ident, target=target, resourceVersion=written["metadata"].get("resourceVersion")
        )
        self._events.post(
            body,
            type="Normal",
            reason=Reason.ISSUED,
            message=status["conditions"][0]["message"],
        )
        logger.info("PodCertificateRequest %s/%s: issued serial %s", *ident, leaf.serial)

    async def _sign(
        self, request: pc.PodRequest, material: issuance.IssuerMaterial, plan: pc.SigningPlan
    ) -> Signed:
        """The one signature for this request, its audit record naming who asked for what."""
        namespace = request.namespace
        context: dict[str, Any] = {
            "purpose": "pod-certificate",
            "outcome": "signed",
            "issuer": material.spec.ref,
            "keyVersion": material.kms_key.key_version,
            "keyAlgorithm": material.kms_key.algorithm,
            "signerName": request.signer_name,
            "keyType": plan.key_type,
            "podCertificateRequest": {
                "namespace": namespace,
                "name": request.name,
                "uid": request.uid,
            },
            "pod": {"namespace": namespace, "name": request.pod_name, "uid": request.pod_uid},
            "serviceAccount": {
                "namespace": namespace,
                "name": request.service_account_name,
                "uid": request.service_account_uid,
            },
            "node": {"name": request.node_name, "uid": request.node_uid},
        }
        try:
            leaf = await issuance.issue_for_public_key(
                material,
                plan.public_key,
                spiffe_id=plan.spiffe_id,
                dns_names=plan.dns_names,
                usages=pc.USAGES,
                lifetime=plan.lifetime,
                minimum=MIN_POD_CERTIFICATE_DURATION,
                record=lambda fields: self._audit.signature(**context, **fields),
            )
        except kmskey.SignatureSpentError as error:
            if error.signature is not None:
                self._audit.delivery(
                    error.signature,
                    outcome="discarded",
                    reason="BuildFailed",
                    message=str(error),
                    podCertificateRequest=context["podCertificateRequest"],
                )
            raise
        return Signed(
            request=(request.namespace, request.name),
            uid=request.uid,
            key_version=material.kms_key.key_version,
            leaf=leaf,
            begin_refresh_at=pc.begin_refresh_at(request.uid, leaf.not_before, leaf.not_after),
        )

    def _usable(
        self, ident: RequestId, uid: str, material: issuance.IssuerMaterial
    ) -> Signed | None:
        """A certificate signed on an earlier attempt, if it may still be written."""
        kept = self._signed.get(ident)
        if kept is None:
            return None
        if (
            kept.uid == uid
            and kept.key_version == material.kms_key.key_version
            and self._clock() - kept.leaf.not_before <= FRESH_FOR
        ):
            return kept
        self._signed.discard(
            ident, "Superseded", "the request or the issuer's key changed, or it grew stale"
        )
        return None

    # -- the one write ----------------------------------------------------------------------
    async def _answer(
        self, ident: RequestId, body: Obj, type_: str, reason: Reason, message: str
    ) -> None:
        """Denied or Failed, final: the kubelet sees it and may ask again with a new request."""
        status = {"conditions": [condition(type_, reason, message, self._clock())]}
        seen = self._answers.first_seen(ident)
        if await self._write_status(ident, body, status) is None:
            return
        self._retries.succeeded(ident)
        self._answers.answered(ident, type_, reason, seen)
        self._signed.discard(ident, "Superseded", f"the request was answered {type_}")
        self._events.post(body, type="Warning", reason=reason, message=message)
        logger.warning("PodCertificateRequest %s/%s: %s %s: %s", *ident, type_, reason, message)

    async def _write_status(self, ident: RequestId, body: Obj, status: Obj) -> Obj | None:
        """PUT the status; None when the request is gone or changed meanwhile (a changed
        one is looked at again at once). Other failures raise ApiError."""
        desired = {
            **body,
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "PodCertificateRequest",
            "status": status,
        }
        try:
            written: Obj = await self._api.update_pod_certificate_request_status(*ident, desired)
        except ApiError as error:
            if error.status == 404:
                self._forget(ident, "the request was deleted")
                return None
            if error.status == 409:  # it changed; the watch brings the new body
                self._schedule(ident, 0)
                return None
            raise
        return written

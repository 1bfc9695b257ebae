"""CertificateSigningRequests (certificates.k8s.io/v1) of Signet's signers.

The request path is the one every path shares: gates and policy (`signet.decisions.csr`,
which reuses `signet.decisions.gates` and `signet.policy`) -> sign once through the
issuer's KMS key, audited the moment KMS answers (`signet.issuance`) -> deliver (one PUT
of ``status.certificate`` to the request's /status) -> a delivery record -> the next look
on the one work queue.

Approval is Kubernetes' business: a request is looked at only once it is Approved, and
never again once it carries a certificate or is Denied or Failed (status.certificate is
immutable), so a restart signs nothing twice. A refusal is the ``Failed`` condition,
naming the field and the rule. A certificate signed on an attempt whose write failed is
kept in the shared ledger and written on the next attempt rather than signed again.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from signet import issuance
from signet.api.issuer import MIN_CSR_DURATION
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
from signet.decisions import csr
from signet.kms.errors import KmsError
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import kmskey
from signet.pki import x509 as pki_x509
from signet.reasons import Reason

logger = logging.getLogger(__name__)

KIND = "CertificateSigningRequest"
API_VERSION = "certificates.k8s.io/v1"
KEEP_SHARE = 1 / 3
"""A certificate kept for a write that failed is written later only while less than this
share of its lifetime has passed; an older one is given up and signed anew, rather than
handed out with most of its life already spent."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class SignedCsr:
    """A certificate signed for a request and not yet written to its status."""

    name: str
    uid: str
    key_version: str
    chain_pem: bytes
    """The leaf, then the intermediates: what status.certificate holds."""
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    signature: str
    """The audit id of the signature record."""

    def subject(self) -> dict[str, Any]:
        return {"certificateSigningRequest": {"name": self.name, "uid": self.uid}}


class CsrController:
    """Answers approved CertificateSigningRequests for Signet's signers; the runtime
    forwards watch events and queue keys to it. A request is identified by its name
    (they are cluster-scoped)."""

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
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = api
        self._events = events
        self._audit = audit
        self._issuers = issuers
        self._schedule = schedule
        self._namespace_labels = namespace_labels
        self._serves = serves
        self._clock = clock
        self.pending: dict[str, Obj] = {}
        self._retries: Retries[str] = Retries(schedule, clock)
        self._answers: Answers[str] = Answers(KIND, metrics)
        self._signed: Ledger[str, SignedCsr] = Ledger(audit)

    # -- watch input ----------------------------------------------------------------------
    def observe(self, body: Obj, deleted: bool) -> str | None:
        """Take a watch event; return the request's name if it needs a pass. Requests for
        other signers or of namespaces this process does not serve, requests not approved
        yet and requests already answered are dropped here, from the event alone."""
        spec = body.get("spec") or {}
        signer = str(spec.get("signerName") or "")
        if not csr.is_ours(signer):
            return None
        name: str = body["metadata"]["name"]
        if deleted:
            self._forget(name, "the request was deleted")
            return None
        if not self._serves(csr.home_namespace(signer, str(spec.get("username") or ""))):
            return None
        phase = csr.phase(body)
        if phase is csr.Phase.DONE:
            self._forget(name, "it was answered", body)
            return None
        if phase is csr.Phase.PENDING:
            return None  # its approval arrives as another event
        self.pending[name] = body
        self._answers.seen(name)
        if self._retries.backing_off(name):
            return None  # its retry is scheduled; our own events must not start it early
        return name

    def on_issuer_change(self, issuer: IssuerId) -> None:
        """An issuer became ready, changed or went away: requests waiting on it look again
        now rather than at the end of their backoff."""
        self._retries.issuer_changed(issuer)

    def _forget(self, name: str, why: str, answered: Obj | None = None) -> None:
        """Done with the request. A certificate still kept for it is accounted for: written
        if the answer is ours (its write succeeded though we have not heard back yet, or
        its answer was lost), else discarded."""
        self.pending.pop(name, None)
        self._retries.forget(name)
        self._answers.forget(name)
        kept = self._signed.get(name)
        if (
            kept is not None
            and answered is not None
            and csr.certificate_of(answered) == kept.chain_pem
        ):
            self._signed.written(
                name,
                target=f"{KIND} {name}",
                resourceVersion=answered["metadata"].get("resourceVersion"),
            )
            return
        self._signed.discard(name, "Superseded", f"not written: {why}")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        """One pass; whatever goes wrong ends in a retry on the backoff schedule."""
        body = self.pending.pop(name, None)
        try:
            if body is None:
                body = await self._api.get_certificate_signing_request(name)
                if body is None:
                    self._forget(name, "the request was deleted")
                    return
            phase = csr.phase(body)
            if phase is csr.Phase.DONE:
                self._forget(name, "it was answered", body)
                return
            if phase is csr.Phase.APPROVED:
                await self._pass(name, body)
        except Exception as error:
            if not isinstance(error, ApiError):
                logger.exception("%s %s: pass failed", KIND, name)
            failure = self._retries.failed(name)
            logger.warning(
                "%s %s: %s; next attempt at %s", KIND, name, error, timestamp(failure.next_retry)
            )

    async def _pass(self, name: str, body: Obj) -> None:
        try:
            request = csr.parse_request(body)
        except ValueError as error:
            await self._fail(name, body, Reason.INVALID_REQUEST, str(error))
            return
        target = csr.issuer_of(request.signer_name)
        found = NO_ISSUER
        account = csr.service_account(request.username)
        if target is not None and not (
            target[0] == "Issuer" and account is not None and account[0] != target[1]
        ):
            looked = await look_up_issuer(
                self._api,
                self._issuers,
                target,
                account[0] if account else None,
                self._namespace_labels,
            )
            if looked is None:  # seen, not resolved yet: its resolution wakes us
                self._retries.wait_for(target, name)
                return
            found = looked
        decision = csr.decide(
            request,
            found.state,
            namespace_labels=found.namespace_labels,
            issuer_absent=found.absent,
        )
        if decision.action is csr.Action.FAIL:
            await self._fail(name, body, decision.reason, decision.message)
        elif decision.action is csr.Action.WAIT:
            assert target is not None
            self._wait(name, body, decision.reason, decision.message, target)
        else:
            state = found.state
            assert decision.plan is not None and state is not None
            assert state.material is not None and target is not None
            await self._issue(name, body, request, state.material, decision.plan, target)

    def _wait(self, name: str, body: Obj, reason: Reason, message: str, issuer: IssuerId) -> None:
        """A transient problem: retry on the backoff schedule, sooner if the issuer
        changes. The request says nothing meanwhile (its status has no condition for it),
        so a Warning Event does (repeats fold into one)."""
        self._retries.wait_for(issuer, name)
        failure = self._retries.failed(name)
        self._events.post(_involved(body), type="Warning", reason=reason, message=message)
        logger.warning(
            "%s %s: %s: %s; next attempt at %s",
            KIND,
            name,
            reason,
            message,
            timestamp(failure.next_retry),
        )

    async def _issue(
        self,
        name: str,
        body: Obj,
        request: csr.CsrRequest,
        material: issuance.IssuerMaterial,
        plan: csr.CsrPlan,
        issuer: IssuerId,
    ) -> None:
        signed = self._usable(name, request.uid, material)
        if signed is None:
            try:
                signed = await self._sign(request, material, plan)
            except KmsError as error:
                self._issuers.note_kms_error(error)
                self._wait(name, body, error.reason, str(error), issuer)
                return
            except kmskey.SignatureSpentError as error:
                self._wait(name, body, Reason.INTERNAL_ERROR, str(error), issuer)
                return
            except ValueError as error:
                await self._fail(name, body, Reason.INVALID_REQUEST, str(error))
                return
            self._signed.keep(name, signed)
        status = {
            **(body.get("status") or {}),
            "certificate": base64.b64encode(signed.chain_pem).decode(),
        }
        target = f"{KIND} {name}"
        seen = self._answers.first_seen(name)
        try:
            written = await self._write_status(name, body, status)
        except ApiError as error:
            self._signed.write_failed(name, signed, error, target=target)
            raise
        if written is None:
            return
        self._retries.succeeded(name)
        self._answers.answered(name, "Issued", Reason.ISSUED, seen)
        # Says nothing if the watch saw the answer first and accounted for it.
        self._signed.written(
            name, target=target, resourceVersion=written["metadata"].get("resourceVersion")
        )
        message = (
            f"issued serial {signed.serial} by {material.spec.ref}, valid until "
            f"{timestamp(signed.not_after)}"
        )
        self._events.post(_involved(body), type="Normal", reason=Reason.ISSUED, message=message)
        logger.info("%s %s: issued serial %s", KIND, name, signed.serial)

    async def _sign(
        self, request: csr.CsrRequest, material: issuance.IssuerMaterial, plan: csr.CsrPlan
    ) -> SignedCsr:
        """The one signature for this request, its audit record naming the request and who
        asked for what."""
        subject = {"name": request.name, "uid": request.uid}
        context: dict[str, Any] = {
            "purpose": "certificate-signing-request",
            "outcome": "signed",
            "issuer": material.spec.ref,
            "keyVersion": material.kms_key.key_version,
            "keyAlgorithm": material.kms_key.algorithm,
            "signerName": request.signer_name,
            "certificateSigningRequest": subject,
            "requester": {
                "username": request.username,
                "uid": request.user_uid,
                "groups": list(request.groups),
            },
            "usages": list(plan.leaf.usages),
        }
        if plan.service_account is not None:
            namespace, account = plan.service_account
            context["serviceAccount"] = {"namespace": namespace, "name": account}
        try:
            return await _issue_leaf(
                request,
                material,
                plan,
                record=lambda fields: self._audit.signature(**context, **fields),
            )
        except kmskey.SignatureSpentError as error:
            if error.signature is not None:
                self._audit.delivery(
                    error.signature,
                    outcome="discarded",
                    reason="BuildFailed",
                    message=str(error),
                    certificateSigningRequest=subject,
                )
            raise

    def _usable(self, name: str, uid: str, material: issuance.IssuerMaterial) -> SignedCsr | None:
        """A certificate signed on an earlier attempt, if it may still be written."""
        kept = self._signed.get(name)
        if kept is None:
            return None
        lifetime = kept.not_after - kept.not_before
        if (
            kept.uid == uid
            and kept.key_version == material.kms_key.key_version
            and self._clock() - kept.not_before <= lifetime * KEEP_SHARE
        ):
            return kept
        self._signed.discard(
            name, "Superseded", "the request or the issuer's key changed, or it grew stale"
        )
        return None

    # -- the one write ----------------------------------------------------------------------
    async def _fail(self, name: str, body: Obj, reason: Reason, message: str) -> None:
        """The Failed condition, final: the requester sees why and may ask again with a
        new request."""
        current = body.get("status") or {}
        conditions = [c for c in current.get("conditions") or [] if c.get("type") != "Failed"]
        status = {
            **current,
            "conditions": [*conditions, condition("Failed", reason, message, self._clock())],
        }
        seen = self._answers.first_seen(name)
        if await self._write_status(name, body, status) is None:
            return
        self._retries.succeeded(name)
        self._answers.answered(name, "Failed", reason, seen)
        self._signed.discard(name, "Superseded", "the request was answered Failed")
        self._events.post(_involved(body), type="Warning", reason=reason, message=message)
        logger.warning("%s %s: Failed %s: %s", KIND, name, reason, message)

    async def _write_status(self, name: str, body: Obj, status: Obj) -> Obj | None:
        """PUT the status; None when the request is gone or changed meanwhile (a changed
        one is looked at again at once). Other failures raise ApiError."""
        desired = {**_involved(body), "status": status}
        try:
            written: Obj = await self._api.update_certificate_signing_request_status(name, desired)
        except ApiError as error:
            if error.status == 404:
                self._forget(name, "the request was deleted")
                return None
            if error.status == 409:  # it changed; the watch brings the new body
                self._schedule(name, 0)
                return None
            raise
        return written


def _involved(body: Obj) -> Obj:
    """The body with its apiVersion and kind, which a watched body may lack."""
    return {**body, "apiVersion": API_VERSION, "kind": KIND}


async def _issue_leaf(
    request: csr.CsrRequest,
    material: issuance.IssuerMaterial,
    plan: csr.CsrPlan,
    *,
    record: issuance.SignatureRecorder,
) -> SignedCsr:
    """Sign the planned leaf for the requester's key, through the same `_sign_leaf` that
    Certificates and pod certificates use (serial, validity and audit fields settled
    before KMS is asked). The certificate spans exactly the planned lifetime from its
    backdated notBefore, or less where the CA ends sooner; less than the shortest lifetime
    a request may ask for is refused before KMS is asked."""
    chain = material.chain
    if chain is None:
        raise ValueError(f"{material.spec.ref} has no X.509 CA")
    now = _now().replace(microsecond=0)
    duration = plan.lifetime - pki_x509.BACKDATE
    not_before, not_after = pki_x509.leaf_validity(chain.issuer, now, duration)
    if not_after - not_before < MIN_CSR_DURATION:
        expires = timestamp(chain.issuer.not_valid_after_utc)
        raise ValueError(
            f"the CA of {material.spec.ref} expires at {expires}: too soon for a certificate "
            "of the shortest lifetime a CertificateSigningRequest may ask for"
        )
    leaf_request = dataclasses.replace(plan.leaf, duration=duration)
    uris = [*leaf_request.uris, *([leaf_request.spiffe_id] if leaf_request.spiffe_id else [])]
    # issuance's own leaf signer: private there only because no other caller needed it
    leaf, signature = await issuance._sign_leaf(
        material,
        chain,
        leaf_request,
        plan.public_key,
        now,
        record,
        spiffeID=leaf_request.spiffe_id,
        subject=leaf_request.subject().rfc4514_string(),
        dnsNames=list(leaf_request.dns_names),
        ipAddresses=list(leaf_request.ip_addresses),
        uris=uris,
        emailAddresses=list(leaf_request.email_addresses),
    )
    return SignedCsr(
        name=request.name,
        uid=request.uid,
        key_version=material.kms_key.key_version,
        chain_pem=chain.leaf_chain_pem(leaf),
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        signature=signature,
    )

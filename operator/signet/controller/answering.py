"""What the request paths answered through a status share: Kubernetes' own certificate
requests (PodCertificateRequest, CertificateSigningRequest) and cert-manager's
CertificateRequests are each answered once, by one write, and until then wait out failures
on the one work queue (a kind whose status can say so says it is waiting).

Each path keeps its own reading of the request, its own decision, its own status shape and
its own API calls (a `RequestController` subclass); the life cycle around them is the same
and lives here: observe -> reconcile -> pass -> sign once through the shared ledger -> one
status write -> delivery record, count and Event. So the two paths cannot drift apart in
when they retry, which issuer change wakes them, how a certificate signed on a failed
attempt is kept, or how their answers are counted.
"""

from __future__ import annotations

import abc
import datetime
import enum
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet import issuance
from signet.api.times import timestamp
from signet.controller.answerbook import Answers, Retries
from signet.controller.issuers import IssuerController, IssuerId, IssuerState
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.signing import Ledger
from signet.decisions.signers import Action, Decision, is_ours, issuer_of
from signet.kms.errors import KmsError
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import kmskey
from signet.pki.request import LeafRequest
from signet.reasons import Reason

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")

API_VERSION = "certificates.k8s.io/v1"


def condition(type_: str, reason: Reason, message: str, now: datetime.datetime) -> Obj:
    """A request's answer as a condition: always True (an answer is never withdrawn)."""
    return {
        "type": type_,
        "status": "True",
        "reason": str(reason),
        "message": message[:1024],
        "lastTransitionTime": timestamp(now),
    }


@dataclass(frozen=True)
class IssuerLookup:
    """What a decision needs of the issuer behind a signer."""

    state: IssuerState | None
    absent: bool
    """The API confirmed there is no such issuer (not merely "not seen yet")."""
    namespace_labels: dict[str, str] | None


NO_ISSUER = IssuerLookup(None, False, None)
"""For a request whose issuer is not to be looked up at all (its decision refuses it
without)."""


async def look_up_issuer(
    api: KubeApi,
    issuers: IssuerController,
    target: IssuerId,
    namespace: str | None,
    namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
) -> IssuerLookup | None:
    """The issuer's resolved state, and for a ClusterIssuer the labels of ``namespace``
    (the requester's, if it has one). None while the issuer is seen but not resolved yet:
    the caller waits for it (`Retries.wait_for`), and its resolution wakes the request. An
    issuer this process has not seen is looked up once, so that a request naming one that
    does not exist is answered rather than left waiting."""
    state = issuers.states.get(target)
    absent = False
    if state is None:
        if issuers.unresolved(target):
            return None
        kind, issuer_namespace, name = target
        absent = await api.get_object(kind, issuer_namespace or None, name) is None
    labels = None
    if target[0] == "ClusterIssuer" and namespace is not None:
        labels = await namespace_labels(namespace)
    return IssuerLookup(state, absent, labels)


def wall_clock() -> datetime.datetime:
    """The clock a controller reads unless a test hands it another."""
    return datetime.datetime.now(datetime.UTC)


class Standing(enum.Enum):
    """Where a request stands for Signet, from its body alone."""

    OPEN = "open"
    """Signet's to answer."""
    ANSWERED = "answered"
    """It carries its one answer: its status is immutable, so it is never looked at again."""
    LEFT = "left"
    """Not Signet's to answer now (not approved yet, or another installation's): a later
    event says when it is."""


class Request(Protocol):
    """What the life cycle reads of a parsed request."""

    @property
    def uid(self) -> str: ...
    @property
    def signer_name(self) -> str: ...


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class Signed(Generic[K]):
    """A certificate signed for a request and not yet written to its status."""

    request: K
    uid: str
    key_version: str
    leaf: issuance.IssuedLeaf
    audit_subject: dict[str, Any]
    """How the audit trail names the request: one key, the kind's own."""

    @property
    def signature(self) -> str:
        return self.leaf.signature

    @property
    def serial(self) -> str:
        return self.leaf.serial

    def subject(self) -> dict[str, Any]:
        return self.audit_subject


class RequestController(abc.ABC, Generic[K, R, P]):
    """Answers one kind of Kubernetes certificate request for Signet's signers; the runtime
    forwards watch events and queue keys to it. ``K`` identifies a request on the queue,
    ``R`` is its parsed body and ``P`` its decision's plan.

    A request is answered exactly once: one that carries an answer is never touched again
    (after a restart too), and a certificate signed on an attempt whose write failed is
    kept in the ledger and written on the next attempt rather than signed again. A
    subclass says only what its kind does differently."""

    KIND: ClassVar[str]
    PURPOSE: ClassVar[str]
    """The ``purpose`` of its signature records."""
    MINIMUM: ClassVar[datetime.timedelta]
    """The shortest certificate its requesters may be handed."""
    UNREADABLE: ClassVar[str]
    """The condition a request that cannot be read is answered with."""
    EVENT_WHILE_WAITING: ClassVar[bool]
    """Whether waiting is said by a Warning Event: for a status with no condition that
    could say it."""
    API_VERSION: ClassVar[str] = API_VERSION
    """Of the kind's objects, for Events about them (a watched body may lack it)."""

    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
        audit: AuditLog,
        issuers: IssuerController,
        *,
        schedule: Callable[[K, float], None],
        namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
        metrics: Metrics | None = None,
        clock: Callable[[], datetime.datetime] = wall_clock,
    ) -> None:
        self._api = api
        self._events = events
        self._audit = audit
        self._issuers = issuers
        self._schedule = schedule
        self._namespace_labels = namespace_labels
        self._clock = clock
        self._log = logging.getLogger(type(self).__module__)
        """The subclass's module logger: log lines name the path they come from."""
        self.pending: dict[K, Obj] = {}
        self._retries: Retries[K] = Retries(schedule, clock)
        self._answers: Answers[K] = Answers(self.KIND, metrics)
        self._signed: Ledger[K, Signed[K]] = Ledger(audit, metrics=metrics)
        self._unseen_answers: set[K] = set()
        """Requests this process answered whose answer the watch has not shown yet: an
        event from before the answer (a status of our own that said the request waits,
        delivered late) must not start a pass that signs again, so until the answer is
        seen a pass reads the request from the API instead."""

    # -- what each kind does its own way ---------------------------------------------------
    @abc.abstractmethod
    def _ident(self, body: Obj) -> K: ...

    @abc.abstractmethod
    def _label(self, ident: K) -> str:
        """The request as log lines and delivery records name it after its kind."""

    @abc.abstractmethod
    def _standing(self, body: Obj) -> Standing: ...

    @abc.abstractmethod
    def _parse(self, body: Obj) -> R:
        """ValueError for a body that cannot be read."""

    @abc.abstractmethod
    def _requester_namespace(self, ident: K, request: R) -> str | None:
        """The namespace whose labels a ClusterIssuer's selector judges; None for a
        requester of no namespace."""

    @abc.abstractmethod
    def _decide(self, request: R, found: IssuerLookup, now: datetime.datetime) -> Decision[P]: ...

    @abc.abstractmethod
    def _leaf(self, plan: P) -> tuple[PublicKeyTypes, LeafRequest]:
        """The requester's key and the leaf to sign for it (ValueError: refused, Failed)."""

    @abc.abstractmethod
    def _subject(self, request: R) -> dict[str, Any]:
        """How the audit trail names the request: one key, the kind's own."""

    @abc.abstractmethod
    def _audit_fields(self, request: R, plan: P) -> dict[str, Any]:
        """Who asked for what, for the signature record."""

    @abc.abstractmethod
    def _keep_for(self, lifetime: datetime.timedelta) -> datetime.timedelta:
        """How long a signed, unwritten certificate of ``lifetime`` may wait for its write."""

    @abc.abstractmethod
    def _issued(
        self, body: Obj, signed: Signed[K], material: issuance.IssuerMaterial
    ) -> tuple[Obj, str]:
        """The status that hands the certificate over, and what its Event says."""

    @abc.abstractmethod
    def _refused(self, body: Obj, type_: str, reason: Reason, message: str) -> Obj:
        """The status of a final refusal (``type_`` is its condition)."""

    def _ours(self, body: Obj) -> bool:
        """Whether the request is for one of Signet's signers at all; by default what its
        ``spec.signerName`` names."""
        return is_ours(str((body.get("spec") or {}).get("signerName") or ""))

    def _waiting(self, body: Obj, reason: Reason, message: str) -> Obj | None:
        """The status that says the request waits, for a kind whose status can say it;
        None (the default) writes nothing."""
        return None

    async def _readable(self, ident: K, body: Obj) -> Obj:
        """The body to parse the request from: by default the one watched. Writes always
        go to the watched body."""
        return body

    @abc.abstractmethod
    def _chain_in(self, body: Obj) -> bytes:
        """The PEM chain an answered body carries; empty if none."""

    @abc.abstractmethod
    async def _get(self, ident: K) -> Obj | None: ...

    @abc.abstractmethod
    async def _put_status(self, ident: K, desired: Obj) -> Obj: ...

    # -- watch input ----------------------------------------------------------------------
    def observe(self, body: Obj, deleted: bool) -> K | None:
        """Take a watch event; return the request if it needs a pass. Requests for other
        signers, requests left alone and requests already answered are dropped here, from
        the event alone."""
        if not self._ours(body):
            return None
        ident = self._ident(body)
        if deleted:
            self._forget(ident, "the request was deleted")
            return None
        standing = self._standing(body)
        if standing is Standing.ANSWERED:
            self._forget(ident, "it was answered", body)
            return None
        if standing is Standing.LEFT:
            return None
        # managedFields is most of a watched body and a pass never reads it; a status PUT
        # without it keeps the server's. Under a burst thousands of bodies wait here.
        metadata = body.get("metadata") or {}
        if "managedFields" in metadata:
            body = {**body, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
        self.pending[ident] = body
        self._answers.seen(ident)
        if self._retries.backing_off(ident):
            return None  # its retry is scheduled; our own events must not start it early
        return ident

    def on_issuer_change(self, issuer: IssuerId) -> None:
        """An issuer became ready, changed or went away: requests waiting on it look again
        now rather than at the end of their backoff."""
        self._retries.issuer_changed(issuer)

    def _forget(self, ident: K, why: str, answered: Obj | None = None) -> None:
        """Done with the request. A certificate still kept for it is accounted for: written
        if the answer is ours (its write succeeded though we have not heard back yet, or
        its answer was lost), else discarded."""
        self.pending.pop(ident, None)
        self._unseen_answers.discard(ident)
        self._retries.forget(ident)
        self._answers.forget(ident)
        kept = self._signed.get(ident)
        if (
            kept is not None
            and answered is not None
            and self._chain_in(answered) == kept.leaf.chain_pem
        ):
            self._signed.written(
                ident,
                target=self._target(ident),
                resourceVersion=answered["metadata"].get("resourceVersion"),
            )
            return
        self._signed.discard(ident, "Superseded", f"not written: {why}")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, ident: K) -> None:
        """One pass; whatever goes wrong ends in a retry on the backoff schedule."""
        body = self.pending.pop(ident, None)
        if ident in self._unseen_answers:
            body = None  # possibly from before our answer: read the request anew
        try:
            if body is None:
                body = await self._get(ident)
                if body is None:
                    self._forget(ident, "the request was deleted")
                    return
            standing = self._standing(body)
            if standing is Standing.ANSWERED:
                self._forget(ident, "it was answered", body)
                return
            if standing is Standing.OPEN:
                self._answers.seen(ident)
                await self._pass(ident, body)
        except Exception as error:
            if not isinstance(error, ApiError):
                self._log.exception("%s: pass failed", self._target(ident))
            failure = self._retries.failed(ident)
            self._log.warning(
                "%s: %s; next attempt at %s",
                self._target(ident),
                error,
                timestamp(failure.next_retry),
            )

    async def _pass(self, ident: K, body: Obj) -> None:
        now = self._clock()
        try:
            request = self._parse(await self._readable(ident, body))
        except ValueError as error:
            await self._answer(ident, body, self.UNREADABLE, Reason.INVALID_REQUEST, str(error))
            return
        target = issuer_of(request.signer_name)
        namespace = self._requester_namespace(ident, request)
        found = NO_ISSUER
        if target is not None and not (
            target[0] == "Issuer" and namespace is not None and namespace != target[1]
        ):
            looked = await look_up_issuer(
                self._api, self._issuers, target, namespace, self._namespace_labels
            )
            if looked is None:  # seen, not resolved yet: its resolution wakes us
                self._retries.wait_for(target, ident)
                return
            found = looked
        decision = self._decide(request, found, now)
        if decision.action is Action.DENY:
            await self._answer(ident, body, "Denied", decision.reason, decision.message)
        elif decision.action is Action.FAIL:
            await self._answer(ident, body, "Failed", decision.reason, decision.message)
        elif decision.action is Action.WAIT:
            assert target is not None
            await self._wait(ident, body, request, decision.reason, decision.message, target)
        else:
            state = found.state
            assert decision.plan is not None and state is not None
            assert state.material is not None and target is not None
            await self._issue(ident, body, request, state.material, decision.plan, target)

    async def _wait(
        self, ident: K, body: Obj, request: R, reason: Reason, message: str, issuer: IssuerId
    ) -> None:
        """A transient problem: retry on the backoff schedule (sooner if the issuer
        changes) for as long as the request exists. Never Failed: the kubelet takes that
        as final for the pod, while a request left pending is eventually deleted by the
        controller-manager's cleaner and asked for again."""
        self._retries.wait_for(issuer, ident)
        failure = self._retries.failed(ident)
        if self.EVENT_WHILE_WAITING:
            self._events.post(self._involved(body), type="Warning", reason=reason, message=message)
        status = self._waiting(body, reason, message)
        if status is not None:
            try:
                await self._write_status(ident, body, status)
            except ApiError as error:  # said on the next attempt, already scheduled
                self._log.warning("%s: waiting not written: %s", self._target(ident), error)
        self._log.warning(
            "%s: %s: %s; next attempt at %s",
            self._target(ident),
            reason,
            message,
            timestamp(failure.next_retry),
        )

    async def _issue(
        self,
        ident: K,
        body: Obj,
        request: R,
        material: issuance.IssuerMaterial,
        plan: P,
        issuer: IssuerId,
    ) -> None:
        signed = self._usable(ident, request.uid, material)
        if signed is None:
            try:
                signed = await self._sign(ident, request, material, plan)
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
        status, message = self._issued(body, signed, material)
        target = self._target(ident)
        seen = self._answers.first_seen(ident)
        try:
            written = await self._write_status(ident, body, status)
        except ApiError as error:
            self._signed.write_failed(ident, signed, error, target=target)
            raise
        if written is None:
            return
        self._unseen_answers.add(ident)
        self._retries.succeeded(ident)
        self._answers.answered(ident, "Issued", Reason.ISSUED, seen)
        # Says nothing if the watch saw the answer first and accounted for it.
        self._signed.written(
            ident, target=target, resourceVersion=written["metadata"].get("resourceVersion")
        )
        self._events.post(
            self._involved(body), type="Normal", reason=Reason.ISSUED, message=message
        )
        self._log.info("%s: issued serial %s", target, signed.serial)

    async def _sign(
        self, ident: K, request: R, material: issuance.IssuerMaterial, plan: P
    ) -> Signed[K]:
        """The one signature for this request, its audit record naming the request and who
        asked for what."""
        subject = self._subject(request)
        context: dict[str, Any] = {
            "purpose": self.PURPOSE,
            "outcome": "signed",
            "issuer": material.spec.ref,
            "keyVersion": material.kms_key.key_version,
            "keyAlgorithm": material.kms_key.algorithm,
            "signerName": request.signer_name,
            **subject,
            **self._audit_fields(request, plan),
        }
        public_key, leaf_request = self._leaf(plan)
        try:
            leaf = await issuance.issue_for_public_key(
                material,
                public_key,
                leaf_request,
                minimum=self.MINIMUM,
                record=lambda fields: self._audit.signature(**context, **fields),
            )
        except kmskey.SignatureSpentError as error:
            self._audit.spent(error.signature, error, **subject)
            raise
        return Signed(ident, request.uid, material.kms_key.key_version, leaf, subject)

    def _usable(self, ident: K, uid: str, material: issuance.IssuerMaterial) -> Signed[K] | None:
        """A certificate signed on an earlier attempt, if it may still be written."""
        kept = self._signed.get(ident)
        if kept is None:
            return None
        leaf = kept.leaf
        if (
            kept.uid == uid
            and kept.key_version == material.kms_key.key_version
            and self._clock() - leaf.not_before <= self._keep_for(leaf.not_after - leaf.not_before)
        ):
            return kept
        self._signed.discard(
            ident, "Superseded", "the request or the issuer's key changed, or it grew stale"
        )
        return None

    # -- the one write ----------------------------------------------------------------------
    async def _answer(self, ident: K, body: Obj, type_: str, reason: Reason, message: str) -> None:
        """A refusal (Denied or Failed), final: the requester sees why and may ask again
        with a new request."""
        status = self._refused(body, type_, reason, message)
        seen = self._answers.first_seen(ident)
        if await self._write_status(ident, body, status) is None:
            return
        self._unseen_answers.add(ident)
        self._retries.succeeded(ident)
        self._answers.answered(ident, type_, reason, seen)
        self._signed.discard(ident, "Superseded", f"the request was answered {type_}")
        self._events.post(self._involved(body), type="Warning", reason=reason, message=message)
        self._log.warning("%s: %s %s: %s", self._target(ident), type_, reason, message)

    async def _write_status(self, ident: K, body: Obj, status: Obj) -> Obj | None:
        """PUT the status; None when the request is gone or changed meanwhile (a changed
        one is looked at again at once). Other failures raise ApiError."""
        try:
            return await self._put_status(ident, {**self._involved(body), "status": status})
        except ApiError as error:
            if error.status == 404:
                self._forget(ident, "the request was deleted")
                return None
            if error.status == 409:  # it changed; the watch brings the new body
                self._schedule(ident, 0)
                return None
            raise

    def _involved(self, body: Obj) -> Obj:
        """The body with its apiVersion and kind, which a watched body may lack."""
        return {**body, "apiVersion": self.API_VERSION, "kind": self.KIND}

    def _target(self, ident: K) -> str:
        return f"{self.KIND} {self._label(ident)}"

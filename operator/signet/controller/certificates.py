"""Certificates: one reconcile pass turns a Certificate into a Secret and a status.

The pass reads what the watches told us (`watchcache`), asks `decide` what the Certificate
needs, and when that is a signature sends it down the one pipeline every request path
shares: gates (`decisions.gates`) -> sign once and audit (`signing`) -> deliver the Secret
-> status (`certstatus`) -> schedule the next look. Only the signing step costs a KMS call
and only changed things cost API writes, which is why a restart over healthy Certificates
is free. Whatever fails, the pass ends with a status that says so and a retry on the one
backoff schedule.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from signet import issuance
from signet.api import SpecError
from signet.api.certificate import RENEW_ANNOTATION, CertificateSpec
from signet.api.times import timestamp_or_none
from signet.controller import certstatus, rollover
from signet.controller import status as st
from signet.controller.certstatus import Failure, generation_of
from signet.controller.delivery import PasswordUnavailable, SecretWriter
from signet.controller.issuers import IssuerController, IssuerState
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.signing import Signatures
from signet.controller.trust import TrustPublisher
from signet.controller.unwritten import Unwritten
from signet.controller.watchcache import CertId, IssuerId, WatchCache, cert_id, secret_id
from signet.decisions import gates
from signet.decisions.certificate import (
    Action,
    CertificateView,
    Decision,
    IssuerKey,
    decide,
    renewal_time,
)
from signet.kms.errors import KmsError
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import kmskey
from signet.reasons import Reason
from signet.secretformat import layout
from signet.secretformat.summary import SecretSummary

logger = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Evaluation:
    """Everything a pass decides from memory, before any I/O."""

    spec: CertificateSpec
    issuer: IssuerId
    issuer_state: IssuerState | None
    material: issuance.IssuerMaterial | None
    summary: SecretSummary | None
    decision: Decision


class CertificateController:
    """Reconciles Certificates; the runtime forwards watch events and queue keys to it."""

    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
        audit: AuditLog,
        metrics: Metrics,
        issuers: IssuerController,
        trust: TrustPublisher,
        *,
        schedule: Callable[[CertId, float], None],
        namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
        namespace_terminating: Callable[[str], bool] = lambda _: False,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._clock = clock
        self._api = api
        self._events = events
        self._metrics = metrics
        self._issuers = issuers
        self.trust = trust
        self._schedule = schedule
        self._namespace_labels = namespace_labels
        self._namespace_terminating = namespace_terminating
        self.cache = WatchCache(wake=lambda cert: schedule(cert, 0))
        self._secrets = SecretWriter(api, self.cache, metrics, clock)
        self.signatures = Signatures(audit, metrics=metrics)
        self._failures: dict[CertId, Failure] = {}
        self._pacer = rollover.ReissuePacer()

    # -- watch input ----------------------------------------------------------------------
    def observe_certificate(self, body: Obj, deleted: bool, *, busy: bool = False) -> CertId | None:
        """Take a watch event; return the Certificate if a reconcile pass is needed.

        A Certificate that is up to date with a current status (every one, after a restart)
        is settled right here, from the caches, and only its renewal time is remembered:
        holding 10,000 bodies until a worker gets to them would cost more memory than the
        whole steady state. One waiting out a backoff keeps its scheduled retry: its own
        failure status coming back through the watch must not start the next attempt.
        """
        metadata = body["metadata"]
        ident = cert_id(metadata["namespace"], metadata["name"])
        if deleted:
            self._forget(ident)
            return None
        self.cache.index(ident, body.get("spec") or {})
        if not busy and self._settled(ident, body):
            self.cache.parked.discard(ident)
            return None
        self.cache.park(ident, body)
        failure = self._failures.get(ident)
        waiting = failure is not None and failure.wait(generation_of(body), self._clock())
        return None if waiting else ident

    def _settled(self, ident: CertId, body: Obj) -> bool:
        evaluation = self._evaluate(body)
        if evaluation is None or ident in self.signatures:
            return False
        if evaluation.decision.action is not Action.NOTHING:
            self.cache.keep_spec(body, evaluation.spec)  # for its pass, and what it causes
            return False
        summary, decision = evaluation.summary, evaluation.decision
        assert summary is not None
        desired = self._ready(body, evaluation.spec, summary, decision.wake_at)
        if st.status_patch(body.get("status"), desired) is not None:
            return False
        state = evaluation.issuer_state
        if (
            evaluation.material is not None
            and state is not None
            and not self.trust.published(evaluation.issuer, state.trust, ident[0])
        ):
            return False
        if decision.wake_at is not None:
            self._schedule(ident, (decision.wake_at - self._clock()).total_seconds())
        return True

    def _evaluate(self, body: Obj) -> Evaluation | None:
        """None for a spec that does not parse (the pass reports it)."""
        metadata = body["metadata"]
        namespace = metadata["namespace"]
        try:
            spec = self.cache.spec(body)
        except SpecError:
            return None
        ref = spec.issuer_ref
        issuer: IssuerId = (ref.kind, "" if ref.cluster_scoped else namespace, ref.name)
        state = self._issuers.states.get(issuer)
        material = state.material if state and state.ready else None
        key = (
            IssuerKey(material.kms_key.key_version, material.ca_key_id(spec.ssh is not None))
            if material
            else None
        )
        summary = self.cache.secrets.get(secret_id(namespace, spec.secret_name))
        view = CertificateView(
            namespace,
            metadata["name"],
            metadata["uid"],
            spec,
            renew_requested_at=(metadata.get("annotations") or {}).get(RENEW_ANNOTATION),
        )
        decision = decide(view, summary, key, self._clock())
        return Evaluation(spec, issuer, state, material, summary, decision)

    def observe_secret(self, body: Obj, deleted: bool) -> None:
        self.cache.observe_secret(body, deleted)

    def forget_parsed_specs(self) -> None:
        self.cache.forget_parsed_specs()

    def on_issuer_change(self, issuer: IssuerId) -> set[str]:
        """An issuer became ready, changed or went away: look again now, without waiting
        out a backoff that was about the issuer, not the Certificate.

        Certificates whose Secret already carries the issuer's current key need no pass
        (after a restart that is all of them, and a pass without a watched body costs a
        GET). Returns the namespaces whose trust bundle may need publishing.
        """
        state = self._issuers.states.get(issuer)
        material = state.material if state and state.ready else None
        namespaces: set[str] = set()
        due: list[CertId] = []
        for cert in self.cache.issuer_links.users(issuer):
            namespaces.add(cert[0])
            if (
                material is not None
                and cert not in self._failures
                and _signed_by(self.cache.summary_of(cert), material)
            ):
                continue
            self._failures.pop(cert, None)
            due.append(cert)
        for cert in rollover.oldest_first(self.cache, due):
            self._schedule(cert, self._rotation_wait(issuer, state, cert))
        return namespaces

    def leaves_on(self, issuer: IssuerId, key_version: str) -> int:
        """The issuer's Certificates whose Secret holds a valid leaf of ``key_version``."""
        return rollover.leaves_on(self.cache, issuer, key_version, self._clock())

    def namespaces_of(self, issuer: IssuerId) -> set[str]:
        return {cert[0] for cert in self.cache.issuer_links.users(issuer)}

    def _rotation_wait(self, issuer: IssuerId, state: IssuerState | None, cert: CertId) -> float:
        """Seconds until a leaf the issuer's rotation replaces has its slot; 0 for any
        other Certificate."""
        current = state.rollover if state is not None and state.ready else None
        if current is None or current.signing_key == current.retiring.key_version:
            return 0.0
        summary = self.cache.summary_of(cert)
        if summary is None or summary.annotations.get(layout.KEY_VERSION) != (
            current.retiring.key_version
        ):
            return 0.0
        assert state is not None and state.spec is not None
        return self._pacer.wait(issuer, cert, state.spec.rotation.reissue_qps)

    async def publish_trust(self, issuer: IssuerId, namespace: str) -> None:
        state = self._issuers.states.get(issuer)
        if state is not None and state.ready and state.material is not None:
            await self.trust.publish(issuer, state.trust, namespace)

    def on_namespace_change(self, namespace: str) -> None:
        for cert, issuer in list(self.cache.issuer_links.targets.items()):
            if cert[0] == namespace and issuer[0] == "ClusterIssuer":
                self._failures.pop(cert, None)
                self._schedule(cert, 0)

    def _forget(self, ident: CertId) -> None:
        self.cache.forget(ident)
        self._failures.pop(ident, None)
        self._pacer.forget(ident)
        self._metrics.forget_certificate(ident)
        self.signatures.discard(ident, "CertificateDeleted", "the Certificate was deleted")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, ident: CertId) -> None:
        """One pass; an exception escaping into the work queue would leave the Certificate
        silent, so every one ends here with a status and a retry."""
        body = self.cache.parked.take(ident)
        if body is None:
            try:
                body = await self._api.get_object("Certificate", *ident)
            except ApiError as error:
                failure = self._note_failure(ident, None)
                logger.warning(
                    "Certificate %s/%s: could not be read (%s); next look at %s",
                    *ident,
                    error,
                    timestamp_or_none(failure.next_retry),
                )
                return
            if body is None:
                self._forget(ident)
                return
        try:
            await self._pass(ident, body)
        except Exception as error:
            if isinstance(error, ApiError):  # its message is the apiserver's, never a body
                reason, message = Reason.API_ERROR, f"Kubernetes API: {error}"
            else:
                logger.exception("Certificate %s/%s: pass failed", *ident)
                reason, message = Reason.INTERNAL_ERROR, f"{type(error).__name__}: {error}"
            try:
                await self._fail(body, reason, message)
            except Exception:
                logger.exception("Certificate %s/%s: reporting a failure failed", *ident)
                if ident not in self._failures:
                    self._note_failure(ident, None)

    async def _pass(self, ident: CertId, body: Obj) -> None:
        if body["metadata"].get("deletionTimestamp") or self._namespace_terminating(ident[0]):
            return  # going away: its Secret may vanish first, which must not cost a signature
        evaluation = self._evaluate(body)
        if evaluation is None:
            try:
                self.cache.spec(body)
            except SpecError as error:
                await self._fail(body, error.reason, error.message)
            return
        spec, summary, decision = evaluation.spec, evaluation.summary, evaluation.decision
        if decision.action is Action.REFUSE:
            self.signatures.discard(ident, decision.reason, decision.message)
            await self._fail(body, decision.reason, decision.message, spec=spec)
            return
        if decision.action is Action.REPAIR_METADATA:
            assert summary is not None
            if await self._secrets.repair(spec, summary):
                self._events.post(
                    body, type="Normal", reason=Reason.SECRET_REPAIRED, message=decision.message
                )
            summary = self.cache.secrets.get(secret_id(ident[0], spec.secret_name), summary)
        if decision.action is Action.REWRITE_OUTPUTS:
            assert summary is not None
            failure = self._failures.get(ident)
            wait = failure.wait(generation_of(body), self._clock()) if failure else None
            if wait is not None:
                self._schedule(ident, wait)
                return
            readable, password = await self._password(body, spec)
            if not readable or not await self._secrets.rewrite_outputs(spec, summary, password):
                return
            self._events.post(
                body, type="Normal", reason=Reason.SECRET_REPAIRED, message=decision.message
            )
            summary = self.cache.secrets[secret_id(ident[0], spec.secret_name)]
        if decision.action in (Action.NOTHING, Action.REPAIR_METADATA, Action.REWRITE_OUTPUTS):
            assert summary is not None
            self._failures.pop(ident, None)
            self.signatures.settle(ident, summary)
            desired = self._ready(body, spec, summary, decision.wake_at)
            await self._become_ready(body, desired, evaluation)
            if decision.wake_at is not None:
                self._schedule(ident, (decision.wake_at - self._clock()).total_seconds())
            return
        failure = self._failures.get(ident)
        wait = failure.wait(generation_of(body), self._clock()) if failure else None
        if wait is not None:  # every failure reason waits here alike: no spinning
            self._schedule(ident, wait)
            return
        await self._issue(ident, body, evaluation)

    async def _issue(self, ident: CertId, body: Obj, evaluation: Evaluation) -> None:
        spec, summary, decision = evaluation.spec, evaluation.summary, evaluation.decision
        if self._issuers.unresolved(evaluation.issuer):
            return  # observed but not resolved yet; on_issuer_change wakes us
        labels = await self._namespace_labels(ident[0]) if spec.issuer_ref.cluster_scoped else None
        refusal = gates.check(
            spec, ident[0], evaluation.issuer_state, namespace_labels=labels, secret=summary
        )
        if refusal is not None:
            await self._fail(
                body, refusal.reason, refusal.message, spec=spec, denied=refusal.denied
            )
            return
        material = evaluation.material
        assert material is not None  # the gates let only a ready issuer through
        if decision.reason is Reason.INCORRECT_ISSUER:
            wait = self._rotation_wait(evaluation.issuer, evaluation.issuer_state, ident)
            if wait > 0:
                self._schedule(ident, wait)
                return
        readable, password = await self._password(body, spec)  # before KMS, which it would waste
        if not readable:
            return
        signed = self.signatures.usable(ident, body, spec, material, self._clock())
        if signed is None:
            try:
                reuse = await self._secrets.reusable_key(spec, summary)
                signed = await self.signatures.sign(body, spec, material, decision.reason, reuse)
            except KmsError as error:
                self._issuers.note_kms_error(error)
                await self._fail(body, error.reason, str(error), spec=spec)
                return
            except kmskey.SignatureSpentError as error:
                await self._fail(body, Reason.INTERNAL_ERROR, str(error), spec=spec)
                return
            except ValueError as error:
                await self._fail(body, Reason.INVALID_REQUEST, str(error), spec=spec)
                return
        await self._deliver(ident, body, evaluation, signed, password)

    async def _password(self, body: Obj, spec: CertificateSpec) -> tuple[bool, bytes | None]:
        """Whether the keystore password could be read (if not, the Certificate is failed
        with the reason and retried), and the password (None without a keystore)."""
        try:
            return True, await self._secrets.keystore_password(spec, body["metadata"]["namespace"])
        except PasswordUnavailable as error:
            await self._fail(body, error.reason, error.message, spec=spec)
            return False, None

    async def _deliver(
        self,
        ident: CertId,
        body: Obj,
        evaluation: Evaluation,
        signed: Unwritten,
        password: bytes | None,
    ) -> None:
        spec, summary, decision = evaluation.spec, evaluation.summary, evaluation.decision
        assert evaluation.material is not None
        secret = secret_id(ident[0], spec.secret_name)
        target = f"{ident[0]}/{spec.secret_name}"
        with self.cache.own_write(secret):
            try:
                written = await self._secrets.write(
                    body, spec, evaluation.material, signed, summary, password
                )
            except ApiError as error:
                self.signatures.delivery_failed(signed, target, error)
                if error.status in (404, 409):  # someone else wrote or deleted it meanwhile
                    self.cache.record_secret(secret, await self._api.get_secret(*secret))
                    # Looked at again at once with what is there now; a second time in a
                    # row backs off (a 404 also means the namespace is gone: no spin).
                    generation = generation_of(body)
                    previous = self._failures.get(ident)
                    if previous is None or previous.generation != generation:
                        self._failures[ident] = Failure(1, generation, self._clock())
                        self._schedule(ident, 0)
                    else:
                        self._note_failure(ident, generation)
                    return
                await self._fail(
                    body,
                    Reason.SECRET_WRITE_FAILED,
                    f"writing Secret {spec.secret_name!r} failed: HTTP {error.status}: "
                    f"{error.message}; the signed certificate is kept and written on the "
                    "next attempt",
                    spec=spec,
                )
                return
            self.cache.record_secret(secret, written, ours=True)
        summary = self.cache.secrets[secret]
        self.signatures.delivered(signed, target, summary.resource_version)
        self._failures.pop(ident, None)
        self._metrics.issuances.labels("success", decision.reason).inc()
        assert summary.not_before is not None and summary.not_after is not None
        due = renewal_time(
            body["metadata"]["uid"],
            summary.not_before,
            summary.not_after,
            spec.renew_before_or_default(),
        )
        desired = self._ready(body, spec, summary, due, trigger=decision, revision=signed.revision)
        await self._become_ready(body, desired, evaluation)
        self._events.post(
            body,
            type="Normal",
            reason=Reason.ISSUED,
            message=f"issued serial {signed.issued.serial} ({decision.reason}: "
            f"{decision.message}), valid until {timestamp_or_none(signed.issued.not_after)}",
        )
        self._schedule(ident, (due - self._clock()).total_seconds())

    # -- status ---------------------------------------------------------------------------
    def _ready(
        self,
        body: Obj,
        spec: CertificateSpec,
        summary: SecretSummary,
        renewal: datetime.datetime | None,
        *,
        trigger: Decision | None = None,
        revision: int | None = None,
    ) -> Obj:
        """The Ready status; the metrics record follows what it says."""
        metadata = body["metadata"]
        self._metrics.observe_certificate(
            (metadata["namespace"], metadata["name"]),
            issuer_name=spec.issuer_ref.name,
            issuer_kind=spec.issuer_ref.kind,
            ready="True",
            not_before=summary.not_before,
            not_after=summary.not_after,
            renewal=renewal,
        )
        return certstatus.ready_status(
            body, summary, renewal, self._clock(), trigger=trigger, revision=revision
        )

    async def _become_ready(self, body: Obj, desired: Obj, evaluation: Evaluation) -> None:
        """Ready promises the namespace's trust bundle too: a pod that mounts it next to the
        Secret must not wait on it. Once per namespace and issuer key; after that a no-op."""
        if evaluation.issuer_state is not None and evaluation.material is not None:
            namespace = body["metadata"]["namespace"]
            await self.trust.publish(evaluation.issuer, evaluation.issuer_state.trust, namespace)
        await self._patch_status(body, desired)

    async def _patch_status(self, body: Obj, desired: Obj) -> None:
        patch = st.status_patch(body.get("status"), desired)
        if patch is None:
            return
        metadata = body["metadata"]
        try:
            await self._api.patch_status(
                "Certificate", metadata["namespace"], metadata["name"], patch
            )
        except ApiError as error:
            if error.status != 404:
                raise

    def _note_failure(self, ident: CertId, generation: int | None) -> Failure:
        """Count a failed attempt and schedule the retry on the one backoff schedule."""
        failure = certstatus.next_failure(self._failures.get(ident), generation, self._clock())
        self._failures[ident] = failure
        self._schedule(ident, (failure.next_retry - self._clock()).total_seconds())
        return failure

    async def _fail(
        self,
        body: Obj,
        reason: Reason,
        message: str,
        *,
        spec: CertificateSpec | None = None,
        denied: bool = False,
    ) -> None:
        """Ready=False with a precise reason; the existing Secret is left exactly as it is.
        A transient reason schedules a retry; a permanent one waits for a change."""
        now = self._clock()
        metadata = body["metadata"]
        ident = cert_id(metadata["namespace"], metadata["name"])
        summary = self.cache.secrets.get(secret_id(ident[0], spec.secret_name)) if spec else None
        message += certstatus.still_valid_note(summary, ident[1], now)
        failure = None if reason.permanent else self._note_failure(ident, generation_of(body))
        desired = certstatus.failed_status(body, reason, message, now, failure=failure)
        if spec is not None:
            self._metrics.observe_certificate(
                ident,
                issuer_name=spec.issuer_ref.name,
                issuer_kind=spec.issuer_ref.kind,
                ready="False",
                not_before=summary.not_before if summary else None,
                not_after=summary.not_after if summary else None,
                renewal=None,
            )
        if st.status_patch(body.get("status"), desired) is None:
            return
        self._metrics.issuances.labels("denied" if denied else "failure", reason).inc()
        self._events.post(body, type="Warning", reason=reason, message=message)
        logger.warning("Certificate %s/%s: %s: %s", *ident, reason, message)
        try:
            await self._patch_status(body, desired)
        except ApiError as error:  # the retry is scheduled; the status follows with it
            logger.warning("Certificate %s/%s: status not written: %s", *ident, error)


def _signed_by(summary: SecretSummary | None, material: issuance.IssuerMaterial) -> bool:
    """Whether an intact Secret was issued with ``material``'s key and CA."""
    if summary is None or summary.problem is not None:
        return False
    ssh = summary.secret_type == layout.SSH_TYPE
    return summary.annotations.get(layout.KEY_VERSION) == material.kms_key.key_version and (
        summary.ca_key_id == material.ca_key_id(ssh)
    )

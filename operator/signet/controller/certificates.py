"""Certificates: one reconcile pass turns a Certificate into a Secret and a status.

The pass is: read what we know (the Certificate body from the watch, the Secret summary
from the Secret watch, the issuer's material) -> `decide` -> maybe issue -> write the
Secret -> write status -> schedule the next look. Only the issue step costs a KMS
signature and only changed things cost API writes, which is why a restart over healthy
Certificates is free.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signet import issuance, policy
from signet.api import GROUP, VERSION, SpecError
from signet.api.certificate import CertificateSpec, parse_certificate_spec
from signet.controller import status as st
from signet.controller.issuers import IssuerController, IssuerId, IssuerState
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.trust import TrustPublisher
from signet.controller.unwritten import Unwritten, UnwrittenStore
from signet.kms.cloudkms import KmsError
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import keys, kmskey
from signet.renewal.decisions import (
    Action,
    CertificateView,
    Decision,
    IssuerKey,
    decide,
    renewal_time,
    retry_delay,
)
from signet.secrets import layout
from signet.secrets.inspect import SecretSummary, summarize

logger = logging.getLogger(__name__)

CertId = tuple[str, str]
SecretId = tuple[str, str]
RENEW_ANNOTATION = "signet.dev/renew-requested-at"
PARKED_BODIES = 1000
"""Watched bodies kept for the reconcile pass; past this, a pass GETs its Certificate."""
PARSED_SPECS = 1000
"""Parsed specs kept for queued passes, by (uid, generation); see `_keep_spec`."""
T = TypeVar("T")


class Links(Generic[T]):
    """Each Certificate points at one target (its Secret, its issuer); the reverse map says
    which Certificates to wake when that target changes.

    A Secret normally has exactly one Certificate, so a lone user is stored as itself and
    only a shared target gets a set: 10,000 one-element sets would cost 2 MiB.
    """

    def __init__(self) -> None:
        self.targets: dict[CertId, T] = {}
        self._users: dict[T, CertId | set[CertId]] = {}

    def link(self, cert: CertId, target: T) -> None:
        if self.targets.get(cert) == target:
            return
        self.unlink(cert)
        self.targets[cert] = target
        users = self._users.get(target)
        if users is None:
            self._users[target] = cert
        elif isinstance(users, set):
            users.add(cert)
        else:
            self._users[target] = {users, cert}

    def unlink(self, cert: CertId) -> None:
        old = self.targets.pop(cert, None)
        if old is None:
            return
        users = self._users[old]
        if isinstance(users, set) and len(users) > 1:
            users.discard(cert)
        else:
            del self._users[old]

    def users(self, target: T) -> list[CertId]:
        users = self._users.get(target)
        if users is None:
            return []
        return list(users) if isinstance(users, set) else [users]


@dataclass(frozen=True)
class Evaluation:
    spec: CertificateSpec
    issuer: IssuerId
    issuer_state: IssuerState | None
    material: issuance.IssuerMaterial | None
    summary: SecretSummary | None
    decision: Decision


def _signed_by(summary: SecretSummary | None, material: issuance.IssuerMaterial) -> bool:
    """Whether an intact Secret was issued with ``material``'s key and CA."""
    if summary is None or summary.problem is not None:
        return False
    ssh = summary.secret_type == layout.SSH_TYPE
    return summary.annotations.get(layout.KEY_VERSION) == material.kms_key.key_version and (
        summary.ca_key_id == material.ca_key_id(ssh)
    )


@dataclass
class Failure:
    attempts: int
    generation: int
    next_retry: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _generation(body: Obj) -> int:
    return int(body["metadata"].get("generation") or 0)


def _resource_version(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


class CertificateController:
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
        self._audit = audit
        self._metrics = metrics
        self._issuers = issuers
        self._trust = trust
        self._schedule = schedule
        self._namespace_labels = namespace_labels
        self._namespace_terminating = namespace_terminating
        self.pending: dict[CertId, Obj] = {}
        self.secrets: dict[SecretId, SecretSummary] = {}
        self._secret_links: Links[SecretId] = Links()
        self._issuer_links: Links[IssuerId] = Links()
        self._failures: dict[CertId, Failure] = {}
        self._writing: dict[SecretId, tuple[Obj, bool] | None] = {}
        self._specs: dict[tuple[str, int | None], CertificateSpec] = {}
        self._unwritten = UnwrittenStore()

    # -- watch input ----------------------------------------------------------------------
    def observe_certificate(self, body: Obj, deleted: bool, *, busy: bool = False) -> CertId | None:
        """Take a watch event; return the Certificate if a reconcile pass is needed.

        A Certificate that is up to date with a current status (every one, after a restart)
        is settled right here, from the caches, and only its renewal time is remembered:
        holding 10,000 bodies until a worker gets to them would cost more memory than the
        whole steady state.
        """
        metadata = body["metadata"]
        ident = (metadata["namespace"], metadata["name"])
        if deleted:
            self.pending.pop(ident, None)
            self._forget(ident)
            return None
        self._index(ident, body.get("spec") or {})
        if not busy and self._settled(ident, body):
            self.pending.pop(ident, None)
            return None
        failure = self._failures.get(ident)
        waiting = (
            failure is not None
            and failure.generation == _generation(body)
            and failure.next_retry > self._clock()
        )
        # Parked until a worker takes it, which saves the pass a GET; without the
        # apiserver's field-ownership bookkeeping, most of a body's small objects. A cold
        # start over thousands parks only the first PARKED_BODIES and reads the rest.
        if len(self.pending) < PARKED_BODIES or ident in self.pending:
            metadata = {key: value for key, value in metadata.items() if key != "managedFields"}
            self.pending[ident] = {**body, "metadata": metadata}
        # A Certificate waiting out a backoff keeps its scheduled retry: its own failure
        # status coming back through the watch must not start the next attempt at once.
        return None if waiting else ident

    def _settled(self, ident: CertId, body: Obj) -> bool:
        evaluation = self._evaluate(body)
        if evaluation is None or ident in self._unwritten:
            return False
        if evaluation.decision.action is not Action.NOTHING:
            self._keep_spec(body, evaluation.spec)  # for its pass, and the events it causes
            return False
        summary, decision = evaluation.summary, evaluation.decision
        assert summary is not None and evaluation.spec is not None
        desired = self._ready_status(body, evaluation.spec, summary, decision.wake_at)
        if st.status_patch(body.get("status"), desired) is not None:
            return False
        if evaluation.material is not None and not self._trust.published(
            evaluation.issuer, evaluation.material, ident[0]
        ):
            return False
        if decision.wake_at is not None:
            self._schedule(ident, (decision.wake_at - self._clock()).total_seconds())
        return True

    def _evaluate(self, body: Obj) -> Evaluation | None:
        """Everything a pass decides from memory, without I/O; None for a spec that does
        not parse (the pass reports it)."""
        metadata = body["metadata"]
        namespace = metadata["namespace"]
        try:
            spec = self._spec(body)
        except SpecError:
            return None
        issuer_ident: IssuerId = (
            ("ClusterIssuer", "", spec.issuer_ref.name)
            if spec.issuer_ref.cluster_scoped
            else ("Issuer", namespace, spec.issuer_ref.name)
        )
        issuer_state = self._issuers.states.get(issuer_ident)
        material = issuer_state.material if issuer_state and issuer_state.ready else None
        issuer_key = (
            IssuerKey(material.kms_key.key_version, material.ca_key_id(spec.ssh is not None))
            if material
            else None
        )
        summary = self.secrets.get((namespace, spec.secret_name))
        view = CertificateView(
            namespace,
            metadata["name"],
            metadata["uid"],
            spec,
            renew_requested_at=(metadata.get("annotations") or {}).get(RENEW_ANNOTATION),
        )
        decision = decide(view, summary, issuer_key, self._clock())
        return Evaluation(spec, issuer_ident, issuer_state, material, summary, decision)

    def _spec(self, body: Obj) -> CertificateSpec:
        """The parsed spec, kept from an earlier look at the same generation if there was
        one (see _keep_spec)."""
        metadata = body["metadata"]
        spec = self._specs.get((metadata["uid"], metadata.get("generation")))
        return spec if spec is not None else parse_certificate_spec(body.get("spec") or {})

    def _keep_spec(self, body: Obj, spec: CertificateSpec) -> None:
        """Keep a spec for the pass about to be queued. A new Certificate is looked at three
        times within seconds (created, its pass, its own status patch); parsing and hashing
        its spec each time were 7% of the operator's CPU while issuing. The apiserver bumps
        the generation on every spec change. Specs of Certificates that need no pass (all
        of them, after a restart) are not kept: they would only pin memory."""
        metadata = body["metadata"]
        generation = metadata.get("generation")
        if not isinstance(generation, int):
            return
        if len(self._specs) >= PARSED_SPECS:
            del self._specs[next(iter(self._specs))]
        self._specs[(metadata["uid"], generation)] = spec

    def forget_parsed_specs(self) -> None:
        """Once a burst is over: the parsed specs help only while it lasts (1,000 of them
        hold ~1.4 MiB)."""
        self._specs.clear()

    def observe_secret(self, body: Obj, deleted: bool) -> None:
        metadata = body["metadata"]
        ident = (metadata["namespace"], metadata["name"])
        if ident in self._writing:
            self._writing[ident] = (body, deleted)  # see _own_write
            return
        current = self.secrets.get(ident)
        if deleted:
            self.secrets.pop(ident, None)
        else:
            version = str(metadata.get("resourceVersion", ""))
            if current is not None and (
                current.resource_version == version
                or _resource_version(version) < _resource_version(current.resource_version)
            ):
                return  # our own write, already summarised, or a stale event
            self.secrets[ident] = summarize(body)
        for cert in self._secret_links.users(ident):
            self._schedule(cert, 0)

    @contextlib.contextmanager
    def _own_write(self, ident: SecretId) -> Iterator[None]:
        """Hold the Secret's watch events while Signet writes it and records the result.

        The watch often delivers a write before its response does. Taken then, our own
        write would look like someone else's: a full summary (the key loaded back) and a
        second pass over the Certificate, with a GET (4% of 1,500 issued at once). Held
        and taken after the summary of the response is in place, it is recognised by its
        resourceVersion; a newer one (someone else's write after ours) is taken as usual.
        """
        self._writing[ident] = None
        try:
            yield
        finally:
            held = self._writing.pop(ident, None)
            if held is not None:
                self.observe_secret(*held)

    def load_secrets(self, items: list[Obj]) -> None:
        for item in items:
            self.observe_secret(item, deleted=False)

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
        for cert in self._issuer_links.users(issuer):
            namespaces.add(cert[0])
            secret = self._secret_links.targets.get(cert)
            summary = self.secrets.get(secret) if secret else None
            if (
                material is not None
                and cert not in self._failures
                and _signed_by(summary, material)
            ):
                continue
            self._failures.pop(cert, None)
            self._schedule(cert, 0)
        return namespaces

    async def publish_trust(self, issuer: IssuerId, namespace: str) -> None:
        state = self._issuers.states.get(issuer)
        if state is not None and state.ready and state.material is not None:
            await self._trust.publish(issuer, state.material, namespace)

    def on_namespace_change(self, namespace: str) -> None:
        for cert, issuer in list(self._issuer_links.targets.items()):
            if cert[0] == namespace and issuer[0] == "ClusterIssuer":
                self._failures.pop(cert, None)
                self._schedule(cert, 0)

    def _index(self, ident: CertId, spec: Obj) -> None:
        secret_name = spec.get("secretName")
        issuer_ref = spec.get("issuerRef") or {}
        if isinstance(secret_name, str):
            self._secret_links.link(ident, (ident[0], secret_name))
        name = issuer_ref.get("name")
        if isinstance(name, str):
            cluster = issuer_ref.get("kind") == "ClusterIssuer"
            self._issuer_links.link(
                ident, ("ClusterIssuer", "", name) if cluster else ("Issuer", ident[0], name)
            )

    def _forget(self, ident: CertId) -> None:
        self._secret_links.unlink(ident)
        self._issuer_links.unlink(ident)
        self._failures.pop(ident, None)
        self._metrics.forget_certificate(ident)
        self._discard_unwritten(ident, "CertificateDeleted", "the Certificate was deleted")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, ident: CertId) -> None:
        """One pass. Whatever goes wrong, the Certificate ends it with a status that says so
        and a retry on the backoff schedule: an exception escaping into the work queue would
        leave it silent and never looked at again."""
        namespace, name = ident
        body = self.pending.pop(ident, None)
        if body is None:
            try:
                body = await self._api.get_object("Certificate", namespace, name)
            except ApiError as error:
                failure = self._note_failure(ident, None)
                logger.warning(
                    "Certificate %s/%s: could not be read (%s); next look at %s",
                    namespace,
                    name,
                    error,
                    st.timestamp(failure.next_retry),
                )
                return
            if body is None:
                self._forget(ident)
                return
        try:
            await self._pass(ident, body)
        except Exception as error:
            await self._pass_failed(ident, body, error)

    async def _pass_failed(self, ident: CertId, body: Obj, error: Exception) -> None:
        if isinstance(error, ApiError):  # its message is the apiserver's, never a body
            reason, message = "APIError", f"Kubernetes API: {error}"
        else:
            logger.exception("Certificate %s/%s: pass failed", *ident)
            reason, message = "InternalError", f"{type(error).__name__}: {error}"
        try:
            spec: CertificateSpec | None = self._spec(body)
        except SpecError:
            spec = None
        try:
            await self._fail(body, spec, reason, message, retry=True)
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
                parse_certificate_spec(body.get("spec") or {})
            except SpecError as error:
                await self._fail(body, None, error.reason, error.message, retry=False)
            return
        spec, issuer_ident, material = evaluation.spec, evaluation.issuer, evaluation.material
        summary, decision = evaluation.summary, evaluation.decision
        if decision.action is Action.REFUSE:
            self._discard_unwritten(ident, decision.reason, decision.message)
            await self._fail(body, spec, decision.reason, decision.message, retry=False)
            return
        if decision.action is Action.REPAIR_METADATA:
            assert summary is not None
            await self._repair_metadata(body, spec, summary, decision)
            summary = self.secrets.get((ident[0], spec.secret_name), summary)
        if decision.action in (Action.NOTHING, Action.REPAIR_METADATA):
            assert summary is not None
            self._failures.pop(ident, None)
            self._settle_unwritten(ident, summary)
            desired = self._ready_status(body, spec, summary, decision.wake_at)
            await self._become_ready(body, desired, issuer_ident, material)
            if decision.wake_at is not None:
                self._schedule(ident, (decision.wake_at - self._clock()).total_seconds())
            return
        if self._backing_off(ident, body):
            return
        await self._issue(body, spec, issuer_ident, evaluation.issuer_state, decision, summary)

    def _backing_off(self, ident: CertId, body: Obj) -> bool:
        """Whether an earlier failure's retry time has not come yet; if so the retry stays
        scheduled and nothing else happens. Every failure reason waits here alike, so a
        missing issuer costs a handful of passes, not one per watch event. A new spec
        generation, the issuer turning ready and the namespace changing all clear it."""
        failure = self._failures.get(ident)
        if failure is None or failure.generation != _generation(body):
            return False
        wait = (failure.next_retry - self._clock()).total_seconds()
        if wait <= 0:
            return False
        self._schedule(ident, wait)
        return True

    def _note_failure(self, ident: CertId, generation: int | None) -> Failure:
        """Count a failed attempt and schedule the retry: 2 s, doubling, capped."""
        now = self._clock()
        failure = self._failures.get(ident)
        if generation is None:
            generation = failure.generation if failure else -1
        attempts = failure.attempts + 1 if failure and failure.generation == generation else 1
        next_retry = now + retry_delay(attempts)
        self._failures[ident] = noted = Failure(attempts, generation, next_retry)
        self._schedule(ident, (next_retry - now).total_seconds())
        return noted

    async def _issue(
        self,
        body: Obj,
        spec: CertificateSpec,
        issuer_ident: IssuerId,
        issuer_state: IssuerState | None,
        decision: Decision,
        summary: SecretSummary | None,
    ) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        ident = (namespace, name)
        if issuer_state is None and issuer_ident in self._issuers.pending:
            return  # observed but not resolved yet; on_issuer_change wakes us
        if issuer_state is None:
            await self._fail(
                body,
                spec,
                "IssuerNotFound",
                f"{issuer_ident[0]} {spec.issuer_ref.name!r} not found"
                + (f" in namespace {namespace!r}" if issuer_ident[1] else ""),
                retry=True,
            )
            return
        if not issuer_state.ready or issuer_state.material is None:
            await self._fail(
                body,
                spec,
                "IssuerNotReady",
                f"{issuer_ident[0]} {spec.issuer_ref.name!r} is not ready: {issuer_state.reason}: "
                f"{issuer_state.message}",
                retry=True,
            )
            return
        material = issuer_state.material
        if issuer_ident[0] == "ClusterIssuer":
            labels = await self._namespace_labels(namespace)
            if labels is None or not policy.namespace_selected(
                material.spec.namespace_selector, labels
            ):
                await self._fail(
                    body,
                    spec,
                    "NamespaceNotAllowed",
                    f"ClusterIssuer {spec.issuer_ref.name!r} does not serve namespace "
                    f"{namespace!r} (its namespaceSelector does not select it)",
                    retry=False,
                )
                return
        denial = policy.check(spec, material.spec, namespace)
        if denial is not None:
            await self._fail(body, spec, denial.reason, denial.message, retry=False, denied=True)
            return
        if summary is not None and summary.secret_type != (
            layout.SSH_TYPE if spec.ssh else layout.TLS_TYPE
        ):
            await self._fail(
                body,
                spec,
                "SecretTypeChanged",
                f"Secret {spec.secret_name!r} has type {summary.secret_type}; a Secret's type "
                "cannot change: delete the Secret or choose another secretName",
                retry=False,
            )
            return
        signed = self._usable_unwritten(ident, body, spec, material)
        if signed is None:
            signed = await self._sign(body, spec, material, decision, summary)
            if signed is None:
                return
        await self._deliver(body, spec, issuer_ident, material, signed, decision, summary)

    async def _sign(
        self,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        decision: Decision,
        summary: SecretSummary | None,
    ) -> Unwritten | None:
        """The one KMS signature for this certificate, audited before anything else can
        happen to it; None after reporting a failure."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        revision = int((body.get("status") or {}).get("revision") or 0) + 1
        context = {
            **self._signature_fields(body, spec, material, decision.reason),
            "outcome": "signed",
            "revision": revision,
        }
        try:
            reuse = await self._reusable_key(spec, summary)
            issued = await issuance.issue(
                material,
                spec,
                namespace=namespace,
                name=name,
                reuse_key=reuse,
                record=lambda fields: self._audit.signature(**context, **fields),
            )
        except KmsError as error:
            self._issuers.note_kms_error(error)
            await self._fail(body, spec, error.reason, str(error), retry=True)
            return None
        except kmskey.SignatureSpentError as error:
            if error.signature is not None:
                self._audit.delivery(
                    error.signature,
                    outcome="discarded",
                    reason="BuildFailed",
                    message=str(error),
                    certificate=context["certificate"],
                )
            await self._fail(body, spec, "InternalError", str(error), retry=True)
            return None
        except ValueError as error:
            await self._fail(body, spec, "InvalidRequest", str(error), retry=False)
            return None
        return Unwritten(
            cert=(namespace, name),
            issued=issued,
            signature=issued.signature,
            uid=metadata["uid"],
            generation=_generation(body),
            spec_hash=spec.content_hash(),
            key_version=material.kms_key.key_version,
            revision=revision,
            trigger=decision.reason,
            renew_at=renewal_time(
                metadata["uid"],
                issued.not_before,
                issued.not_after,
                spec.renew_before_or_default(),
            ),
        )

    @staticmethod
    def _signature_fields(
        body: Obj, spec: CertificateSpec, material: issuance.IssuerMaterial, trigger: str
    ) -> dict[str, Any]:
        metadata = body["metadata"]
        return {
            "purpose": "certificate",
            "issuer": material.spec.ref,
            "keyVersion": material.kms_key.key_version,
            "keyAlgorithm": material.kms_key.algorithm,
            "certificate": {
                "namespace": metadata["namespace"],
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
            "secret": spec.secret_name,
            "trigger": trigger,
        }

    async def _deliver(
        self,
        body: Obj,
        spec: CertificateSpec,
        issuer_ident: IssuerId,
        material: issuance.IssuerMaterial,
        signed: Unwritten,
        decision: Decision,
        summary: SecretSummary | None,
    ) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        ident = (namespace, name)
        issued, revision = signed.issued, signed.revision
        with self._own_write((namespace, spec.secret_name)):
            try:
                written = await self._write_secret(body, spec, material, issued, summary, revision)
            except ApiError as error:
                self._keep_unwritten(ident, signed)
                self._delivery(
                    signed,
                    outcome="write-failed",
                    secret=f"{namespace}/{spec.secret_name}",
                    error=str(error),
                )
                if error.status in (404, 409):  # someone else wrote or deleted it meanwhile
                    await self._refresh_secret(namespace, spec.secret_name)
                    self._schedule(ident, 0)
                    return
                permanent = error.status in (400, 403, 422)
                await self._fail(
                    body,
                    spec,
                    "SecretWriteFailed",
                    f"writing Secret {spec.secret_name!r} failed: HTTP {error.status}: "
                    f"{error.message}; the signed certificate is kept and written on the "
                    "next attempt",
                    retry=not permanent,  # a rejected write fails again: no signature per retry
                )
                return
            summary = summarize(written, written_by_us=True)
            self.secrets[(namespace, spec.secret_name)] = summary
        self._unwritten.pop(ident)
        self._failures.pop(ident, None)
        self._delivery(
            signed,
            outcome="written",
            secret=f"{namespace}/{spec.secret_name}",
            resourceVersion=summary.resource_version,
        )
        self._metrics.issuances.labels("success", decision.reason).inc()
        due = _renewal(body, spec, summary)
        desired = self._ready_status(body, spec, summary, due, trigger=decision, revision=revision)
        await self._become_ready(body, desired, issuer_ident, material)
        self._events.post(
            body,
            type="Normal",
            reason="Issued",
            message=f"issued serial {issued.serial} ({decision.reason}: {decision.message}), "
            f"valid until {st.timestamp(issued.not_after)}",
        )
        self._schedule(ident, (due - self._clock()).total_seconds())

    # -- signed, not yet written ------------------------------------------------------------
    def _usable_unwritten(
        self, ident: CertId, body: Obj, spec: CertificateSpec, material: issuance.IssuerMaterial
    ) -> Unwritten | None:
        """A certificate signed on an earlier pass whose write failed, if it is still what
        this pass would sign; one that is not is given up (and audited as such)."""
        kept = self._unwritten.get(ident)
        if kept is None:
            return None
        if kept.usable_for(
            body["metadata"]["uid"],
            _generation(body),
            spec.content_hash(),
            material.kms_key.key_version,
            self._clock(),
        ):
            return kept
        self._discard_unwritten(
            ident,
            "Superseded",
            "the spec or the issuer's key changed, or renewal came due, before it was written",
        )
        return None

    def _keep_unwritten(self, ident: CertId, signed: Unwritten) -> None:
        for given_up in self._unwritten.keep(ident, signed):
            self._delivery(
                given_up,
                outcome="discarded",
                reason="Evicted",
                message="too many certificates waiting to be written; the oldest is given up",
            )

    def _settle_unwritten(self, ident: CertId, summary: SecretSummary) -> None:
        """The Secret is up to date: either with the certificate that waited (a write that
        succeeded although its answer was lost) or without it."""
        kept = self._unwritten.pop(ident)
        if kept is None:
            return
        if summary.serial == kept.issued.serial:
            self._delivery(
                kept,
                outcome="written",
                secret=f"{summary.namespace}/{summary.name}",
                resourceVersion=summary.resource_version,
                note="found in the Secret after the write's answer was lost",
            )
            return
        self._delivery(
            kept,
            outcome="discarded",
            reason="Superseded",
            message="the Secret became up to date without it",
        )

    def _delivery(self, item: Unwritten, outcome: str, **fields: Any) -> None:
        """What became of a signed certificate, pointing at its signature record."""
        self._audit.delivery(
            item.signature,
            outcome=outcome,
            certificate={"namespace": item.cert[0], "name": item.cert[1], "uid": item.uid},
            serialNumber=item.issued.serial,
            **fields,
        )

    def _discard_unwritten(self, ident: CertId, reason: str, message: str) -> None:
        kept = self._unwritten.pop(ident)
        if kept is not None:
            self._delivery(
                kept,
                outcome="discarded",
                reason=reason,
                message=message,
            )

    async def _reusable_key(
        self, spec: CertificateSpec, summary: SecretSummary | None
    ) -> keys.LeafPrivateKey | None:
        """rotationPolicy Never: keep the key in an intact Secret if it fits the spec."""
        if spec.private_key.rotation_policy != "Never" or summary is None or summary.problem:
            return None
        secret = await self._api.get_secret(summary.namespace, summary.name)
        if secret is None:
            return None
        field = layout.SSH_PRIVATE_KEY if spec.ssh else layout.TLS_KEY
        encoded = (secret.get("data") or {}).get(field)
        if not encoded:
            return None
        try:
            key = keys.load_private_key(base64.b64decode(encoded))
        except ValueError:
            return None
        return key if _key_fits(key, spec) else None

    async def _refresh_secret(self, namespace: str, name: str) -> None:
        secret = await self._api.get_secret(namespace, name)
        if secret is None:
            self.secrets.pop((namespace, name), None)
        else:
            self.secrets[(namespace, name)] = summarize(secret)

    async def _write_secret(
        self,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        issued: issuance.Issued,
        summary: SecretSummary | None,
        revision: int,
    ) -> Obj:
        metadata = body["metadata"]
        annotations = {
            **spec.secret_annotations,
            **issued.annotations,
            layout.CERTIFICATE_NAME: metadata["name"],
            layout.ISSUER_NAME: spec.issuer_ref.name,
            layout.ISSUER_KIND: spec.issuer_ref.kind,
            layout.ISSUER_GROUP: GROUP,
            layout.KEY_VERSION: material.kms_key.key_version,
            layout.SPEC_HASH: spec.content_hash(),
            layout.REVISION: str(revision),
            layout.ISSUED_AT: st.timestamp(self._clock()) or "",
        }
        secret: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": issued.secret_type,
            "metadata": {
                "name": spec.secret_name,
                "namespace": metadata["namespace"],
                "labels": {
                    **spec.secret_labels,
                    layout.MANAGED_BY_LABEL: layout.MANAGED_BY,
                    layout.CERTIFICATE_LABEL: layout.certificate_label_value(metadata["name"]),
                },
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Certificate",
                        "name": metadata["name"],
                        "uid": metadata["uid"],
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "data": {k: base64.b64encode(v).decode() for k, v in issued.data.items()},
        }
        if summary is None:
            self._metrics.secret_writes.labels("create").inc()
            return await self._api.create_secret(metadata["namespace"], secret)
        secret["metadata"]["resourceVersion"] = summary.resource_version
        self._metrics.secret_writes.labels("replace").inc()
        return await self._api.replace_secret(metadata["namespace"], spec.secret_name, secret)

    async def _repair_metadata(
        self, body: Obj, spec: CertificateSpec, summary: SecretSummary, decision: Decision
    ) -> None:
        patch = {
            "metadata": {
                "labels": dict(spec.secret_labels),
                "annotations": dict(spec.secret_annotations),
            }
        }
        with self._own_write((summary.namespace, summary.name)):
            try:
                written = await self._api.patch_secret(summary.namespace, summary.name, patch)
            except ApiError as error:
                logger.warning(
                    "could not repair Secret %s/%s: HTTP %s",
                    summary.namespace,
                    summary.name,
                    error.status,
                )
                return
            self._metrics.secret_writes.labels("patch").inc()
            self.secrets[(summary.namespace, summary.name)] = summarize(written)
        self._events.post(body, type="Normal", reason="SecretRepaired", message=decision.message)

    # -- status ---------------------------------------------------------------------------
    def _ready_status(
        self,
        body: Obj,
        spec: CertificateSpec,
        summary: SecretSummary,
        renewal: datetime.datetime | None,
        *,
        trigger: Decision | None = None,
        revision: int | None = None,
    ) -> Obj:
        """The status of a Ready Certificate (and, as a side effect, its metrics record)."""
        now = self._clock()
        metadata = body["metadata"]
        current = body.get("status") or {}
        previous = st.conditions_by_type(current)
        generation = metadata.get("generation")
        annotations = summary.annotations
        conditions = [
            st.condition(
                "Ready",
                "True",
                "Ready",
                f"certificate is up to date and valid until {st.timestamp(summary.not_after)}",
                generation=generation,
                previous=previous.get("Ready"),
                now=now,
            )
        ]
        if trigger is not None:
            conditions.append(
                st.condition(
                    "Issuing",
                    "False",
                    "Issued",
                    f"issued serial {summary.serial} because {trigger.reason}: {trigger.message}",
                    generation=generation,
                    previous=previous.get("Issuing"),
                    now=now,
                )
            )
        elif "Issuing" in previous:
            kept = dict(previous["Issuing"])
            if kept.get("status") != "False" or kept.get("reason") != "Issued":
                kept = st.condition(
                    "Issuing",
                    "False",
                    "UpToDate",
                    "no issuance needed",
                    generation=generation,
                    previous=kept,
                    now=now,
                )
            conditions.append(kept)
        desired: Obj = {
            "conditions": conditions,
            "notBefore": st.timestamp(summary.not_before),
            "notAfter": st.timestamp(summary.not_after),
            "renewalTime": st.timestamp(renewal),
            "serialNumber": summary.serial,
            "revision": revision
            if revision is not None
            else int(annotations.get(layout.REVISION, "0") or 0),
            "keyVersion": annotations.get(layout.KEY_VERSION),
            "spiffeID": annotations.get(layout.SPIFFE_ID),
            "observedGeneration": generation,
        }
        self._metrics.observe_certificate(
            (metadata["namespace"], metadata["name"]),
            issuer_name=spec.issuer_ref.name,
            issuer_kind=spec.issuer_ref.kind,
            ready="True",
            not_before=summary.not_before,
            not_after=summary.not_after,
            renewal=renewal,
        )
        return desired

    async def _become_ready(
        self,
        body: Obj,
        desired: Obj,
        issuer: IssuerId,
        material: issuance.IssuerMaterial | None,
    ) -> None:
        """Ready promises the namespace's trust bundle too: a pod that mounts it next to the
        Secret must not wait on it. Once per namespace and issuer key; after that a no-op."""
        if material is not None:
            await self._trust.publish(issuer, material, body["metadata"]["namespace"])
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

    async def _fail(
        self,
        body: Obj,
        spec: CertificateSpec | None,
        reason: str,
        message: str,
        *,
        retry: bool,
        denied: bool = False,
    ) -> None:
        """Ready=False with a precise reason; the existing Secret is left exactly as it is."""
        now = self._clock()
        metadata = body["metadata"]
        ident = (metadata["namespace"], metadata["name"])
        generation = int(metadata.get("generation") or 0)
        current = body.get("status") or {}
        previous = st.conditions_by_type(current)
        summary = self.secrets.get((ident[0], spec.secret_name)) if spec else None
        if (
            summary is not None
            and summary.problem is None
            and summary.certificate_name == ident[1]
            and summary.not_after
            and summary.not_after > now
        ):
            message += (
                f"; the current certificate stays valid until {st.timestamp(summary.not_after)}"
            )
        desired: Obj = {
            k: v for k, v in current.items() if k not in ("conditions", "nextRetryTime")
        }
        issuing = None
        if retry:
            failure = self._note_failure(ident, generation)
            attempts, next_retry = failure.attempts, failure.next_retry
            desired["failedIssuanceAttempts"] = attempts
            desired["lastFailureTime"] = st.timestamp(now)
            desired["nextRetryTime"] = st.timestamp(next_retry)
            issuing = st.condition(
                "Issuing",
                "True",
                reason,
                f"attempt {attempts} failed; retrying at {st.timestamp(next_retry)}",
                generation=generation,
                previous=previous.get("Issuing"),
                now=now,
            )
        elif previous.get("Issuing"):
            issuing = st.condition(
                "Issuing",
                "False",
                reason,
                "not retrying until the spec or its inputs change",
                generation=generation,
                previous=previous.get("Issuing"),
                now=now,
            )
        desired["conditions"] = [
            st.condition(
                "Ready",
                "False",
                reason,
                message,
                generation=generation,
                previous=previous.get("Ready"),
                now=now,
            ),
            *([issuing] if issuing else []),
        ]
        desired["observedGeneration"] = generation
        unchanged = st.status_patch(current, desired) is None
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
        if unchanged:
            return
        result = "denied" if denied else "failure"
        self._metrics.issuances.labels(result, reason).inc()
        self._events.post(body, type="Warning", reason=reason, message=message)
        logger.warning("Certificate %s/%s: %s: %s", ident[0], ident[1], reason, message)
        try:
            await self._patch_status(body, desired)
        except ApiError as error:  # the retry is scheduled; the status follows with it
            logger.warning("Certificate %s/%s: status not written: %s", ident[0], ident[1], error)


def _key_fits(key: keys.LeafPrivateKey, spec: CertificateSpec) -> bool:
    algorithm, size = spec.private_key.algorithm, spec.private_key.size
    if algorithm == "RSA":
        return isinstance(key, rsa.RSAPrivateKey) and key.key_size == size
    if algorithm == "ECDSA":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == size
    return isinstance(key, ed25519.Ed25519PrivateKey)


def _renewal(body: Obj, spec: CertificateSpec, summary: SecretSummary) -> datetime.datetime:
    assert summary.not_before is not None and summary.not_after is not None
    return renewal_time(
        body["metadata"]["uid"],
        summary.not_before,
        summary.not_after,
        spec.renew_before_or_default(),
    )

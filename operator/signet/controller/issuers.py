"""Issuers and ClusterIssuers: resolve the KMS key and CA material once, serve it to many.

Resolving an issuer costs one GetPublicKey per key version per process (signers are
cached) and, only for a self-signed bootstrap without a usable CA certificate in status,
one AsymmetricSign. Certificates never touch KMS metadata; they get `IssuerMaterial`.
"""

from __future__ import annotations

import base64
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from signet.api import SpecError
from signet.api.issuer import IssuerSpec, parse_issuer_spec
from signet.api.times import timestamp_or_none
from signet.controller import issuerstatus, rollover
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.signers import SignerCache
from signet.decisions import rotation
from signet.decisions.certificate import retry_delay
from signet.issuance import IssuerMaterial, TrustSet
from signet.kms.cloudkms import RetryPolicy
from signet.kms.errors import KmsError, KmsKeyDisabled, KmsKeyNotFound
from signet.kms.limiter import SignLimiter
from signet.kms.signer import KmsPublicKey, Signer
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.pki import kmskey
from signet.pki import ssh as pki_ssh
from signet.pki import x509 as pki_x509
from signet.pki.chain import CaChain, parse_ca_chain
from signet.reasons import Reason

logger = logging.getLogger(__name__)

IssuerId = tuple[str, str, str]
"""(kind, namespace or "", name)."""

RECHECK = datetime.timedelta(minutes=10)
"""How often a ready issuer is re-verified (key still enabled, CA Secret unchanged)."""


@dataclass
class IssuerState:
    """An issuer as last resolved: ready with its material, or why not."""

    ready: bool
    reason: Reason
    message: str
    spec: IssuerSpec | None = None
    material: IssuerMaterial | None = None
    failures: int = 0
    bootstrap: str | None = None
    """Audit id of a CA bootstrap signature made by this resolve, until it is published."""
    trust: TrustSet = field(default_factory=TrustSet)
    """What peers of this issuer's leaves must trust: both keys during a rotation."""
    step: rotation.Step | None = None
    """Where the issuer's key rotation stands (None until resolved)."""

    @property
    def rollover(self) -> rotation.Rollover | None:
        return self.step.rollover if self.step is not None else None


def issuer_id(body: Obj) -> IssuerId:
    metadata = body["metadata"]
    return (body["kind"], metadata.get("namespace") or "", metadata["name"])


class IssuerController:
    """Resolves Issuers and ClusterIssuers into signing material once per change, and wakes
    their Certificates when that material changes."""

    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
        audit: AuditLog,
        *,
        kms_client: Any,
        limiter: SignLimiter,
        operator_namespace: str,
        on_change: Callable[[IssuerId], None],
        schedule: Callable[[IssuerId, float], None],
        observe_sign: Callable[[Any], None] | None = None,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        rotation_overlap: bool = True,
    ) -> None:
        self._api = api
        self._events = events
        self._audit = audit
        self._operator_namespace = operator_namespace
        self._on_change = on_change
        self._schedule = schedule
        self._signers = SignerCache(
            api,
            kms_client=kms_client,
            limiter=limiter,
            operator_namespace=operator_namespace,
            observe_sign=observe_sign,
            retry=retry,
        )
        self.states: dict[IssuerId, IssuerState] = {}
        self.pending: dict[IssuerId, Obj] = {}
        """Issuers seen by the watch and not yet taken up by a reconcile."""
        self._resolving: set[IssuerId] = set()
        """Issuers a reconcile has taken up and not yet given a state."""
        self._key_facts: dict[str, str] = {}
        """Last fact audited per key version, so a fact is recorded when it changes."""
        self._metrics = metrics
        self._overlap = rotation_overlap
        self._written: dict[IssuerId, tuple[rotation.Rollover | None, rotation.Anchor]] = {}
        """The rollover and signing anchor this process last wrote to status: a watch
        event can still carry the status from before that write."""
        self.trust_published: Callable[[IssuerId, TrustSet, IssuerSpec], bool] = lambda *_: True
        """Whether every bundle of the issuer holds this trust set (set by the runtime)."""
        self.old_leaves: Callable[[IssuerId, str], int] = lambda *_: 0
        """Leaves of the issuer's Certificates signed by a key version, still valid."""
        self.certificates_known: Callable[[], bool] = lambda: True
        """Whether every Certificate has been listed since the start (set by the runtime):
        the two answers above count only the Certificates seen so far."""
        self.leads: Callable[[IssuerId], bool] = lambda _: True
        """Whether this replica writes the issuer's status and Events and may bootstrap its
        CA. With sharding only the issuer's owner does; the other replicas resolve the
        same material from what it wrote (one bootstrap signature, no status fight)."""

    def forget_written(self) -> None:
        """Another replica may have moved rollovers on while this one stood by."""
        self._written.clear()

    def note_key_fact(self, key_version: str, fact: str, message: str) -> None:
        """Audit what Signet learned about a key (first use by this process, found
        disabled or destroyed, usable again), once per change rather than per attempt."""
        if self._key_facts.get(key_version) == fact:
            return
        self._key_facts[key_version] = fact
        self._audit.key_event(event=fact, keyVersion=key_version, message=message)

    def note_kms_error(self, error: KmsError) -> None:
        if isinstance(error, KmsKeyDisabled | KmsKeyNotFound):
            self.note_key_fact(error.key_version, error.reason, str(error))

    def signer(self, key_version: str, spec: IssuerSpec | None = None) -> Signer:
        """One signer per key version for the life of the process (see `SignerCache`).

        A PKCS#11 key also needs its module and PIN: from ``spec`` when given, else from
        the spec of an issuer resolved earlier with that key (a rollover's older key).
        """
        if spec is None or spec.key_version != key_version:
            spec = next(
                (
                    state.spec
                    for state in self.states.values()
                    if state.spec is not None and state.spec.key_version == key_version
                ),
                None,
            )
        return self._signers.signer(key_version, spec)

    def unresolved(self, ident: IssuerId) -> bool:
        """Whether the issuer is seen but has no state yet: still pending, or in its first
        resolution, which awaits KMS. A request naming it waits to be woken by that
        resolution (`on_change`) rather than report the issuer missing: an Issuer applied
        together with its Certificates is not a missing one."""
        return ident not in self.states and (ident in self.pending or ident in self._resolving)

    def observe(self, body: Obj, deleted: bool) -> None:
        ident = issuer_id(body)
        if deleted:
            self.pending.pop(ident, None)
            self._written.pop(ident, None)
            if self._metrics is not None:
                self._metrics.forget_issuer(ident)
            if self.states.pop(ident, None) is not None:
                self._on_change(ident)
            return
        self.pending[ident] = body

    async def reconcile(self, ident: IssuerId) -> None:
        kind, namespace, name = ident
        body = self.pending.pop(ident, None)
        if body is None:
            try:
                body = await self._api.get_object(kind, namespace or None, name)
            except ApiError as error:
                failures = self.states[ident].failures + 1 if ident in self.states else 1
                logger.warning("%s %s: could not be read: %s", kind, name, error)
                self._schedule(ident, retry_delay(failures).total_seconds())
                return
            if body is None:
                self.states.pop(ident, None)
                return
        previous = self.states.get(ident)
        self._resolving.add(ident)
        try:
            state = await self._resolve(ident, body, previous)
        finally:
            self._resolving.discard(ident)
        if state.ready:
            state.failures = 0
            self._schedule(ident, _next_look(state))
        else:
            state.failures = (previous.failures if previous else 0) + 1
            if not state.reason.permanent:  # a spec error waits for the spec to change
                self._schedule(ident, retry_delay(state.failures).total_seconds())
        self.states[ident] = state
        changed = (
            previous is None
            or previous.ready != state.ready
            or previous.spec != state.spec
            or _material_key(previous.material) != _material_key(state.material)
        )
        trust_changed = state.ready and (previous is None or previous.trust != state.trust)
        if state.bootstrap is None and previous is not None and previous.bootstrap is not None:
            if _ca_serial(previous.material) == _ca_serial(state.material):
                state.bootstrap = previous.bootstrap  # made earlier, still to be published
            else:
                self._audit.delivery(
                    previous.bootstrap,
                    outcome="discarded",
                    reason="Superseded",
                    message="the issuer changed before its bootstrap CA was published",
                )
        leads = self.leads(ident)
        said = False  # the stored status already says all of this (a restart, a resync)
        try:
            if leads:
                said = not await self._write_status(body, state)
        except ApiError as error:
            logger.warning("%s %s: status not written: %s", kind, name, error)
            self._schedule(ident, retry_delay(max(state.failures, 1)).total_seconds())
        else:
            if leads:
                self._note_rotation(ident, body, state)
            if state.bootstrap is not None:
                self._audit.delivery(
                    state.bootstrap,
                    outcome="published",
                    issuer=f"{kind}/{namespace + '/' if namespace else ''}{name}",
                    serialNumber=_ca_serial(state.material),
                    target="status.caCertificate",
                )
                state.bootstrap = None
        if changed and leads and not said:
            if state.ready:
                self._events.post(body, type="Normal", reason="Ready", message=state.message)
            else:
                self._events.post(body, type="Warning", reason=state.reason, message=state.message)
        if changed or trust_changed:
            self._on_change(ident)

    def _note_rotation(self, ident: IssuerId, body: Obj, state: IssuerState) -> None:
        """After the status holding it was written: remember the rollover, and tell of a
        phase change (Event, audit record, metric) exactly once."""
        step = state.step
        if step is None or state.material is None:
            return
        self._written[ident] = (step.rollover, state.material.anchor)
        if self._metrics is not None:
            self._metrics.observe_rotation(ident, step.phase)
        if step.transition is None:
            return
        self._events.post(body, type="Normal", reason=step.transition, message=step.message)
        rollover = step.rollover
        self._audit.record(
            "signet.dev/rotation",
            event=str(step.transition),
            issuer=state.material.spec.ref,
            phase=str(step.phase),
            keyVersion=step.signing_key,
            fromKeyVersion=rollover.retiring.key_version if rollover else None,
            toKeyVersion=rollover.target.key_version if rollover else None,
            message=step.message,
        )
        logger.info("%s: %s: %s", state.material.spec.ref, step.transition, step.message)

    async def _resolve(
        self, ident: IssuerId, body: Obj, previous: IssuerState | None
    ) -> IssuerState:
        kind, namespace, name = ident
        try:
            spec = parse_issuer_spec(kind, name, namespace or None, body.get("spec") or {})
        except SpecError as error:
            return IssuerState(False, error.reason, error.message)
        status = body.get("status") or {}
        recorded, signing = self._written.get(ident) or (
            rotation.from_status(status),
            rotation.signing_anchor(status),
        )
        known = rollover.known_anchors(status, recorded, previous.material if previous else None)
        bootstrap: list[str] = []
        try:
            if rollover.queued(recorded, spec.key_version):
                # One rollover at a time: the key named now waits, unresolved (resolving
                # would bootstrap a CA that nothing records yet).
                assert recorded is not None
                wanted = rotation.Anchor(spec.key_version)
                step = self._step(ident, spec, recorded, signing, wanted)
                material = await self._anchor_material(spec, recorded.target)
            else:
                target = await self._material(spec, body, known, bootstrap)
                step = self._step(ident, spec, recorded, signing, target.anchor)
                material = target
                if step.signing_key != spec.key_version:
                    anchor = next(a for a in step.anchors if a.key_version == step.signing_key)
                    material = await self._anchor_material(spec, anchor)
        except KmsError as error:
            self.note_kms_error(error)
            return IssuerState(False, error.reason, str(error), spec)
        except kmskey.SignatureSpentError as error:
            for signature in bootstrap:
                self._audit.spent(signature, error)
            return IssuerState(False, Reason.INTERNAL_ERROR, str(error), spec)
        except SpecError as error:
            return IssuerState(False, error.reason, error.message, spec)
        what = ", ".join(
            p
            for p in ("X.509" if material.chain else "", "SSH" if material.ssh_ca_line else "")
            if p
        )
        message = (
            f"signing {what} with {material.kms_key.key_version} ({material.kms_key.algorithm})"
        )
        if step.rollover is not None:
            message += f"; rotation {step.rollover.progress()}: {step.message}"
        return IssuerState(
            True,
            Reason.KEY_READY,
            message,
            spec,
            material,
            bootstrap=bootstrap[0] if bootstrap else None,
            trust=TrustSet.of(step.anchors or (material.anchor,)),
            step=step,
        )

    def _step(
        self,
        ident: IssuerId,
        spec: IssuerSpec,
        recorded: rotation.Rollover | None,
        signing: rotation.Anchor | None,
        wanted: rotation.Anchor,
    ) -> rotation.Step:
        facts = rotation.Facts(
            now=datetime.datetime.now(datetime.UTC),
            trust_published=lambda anchors: self.trust_published(ident, TrustSet.of(anchors), spec),
            old_leaves=lambda key_version: self.old_leaves(ident, key_version),
            unreissuable_lifetime=rollover.unreissuable_lifetime(spec),
            certificates_known=self.certificates_known(),
        )
        return rotation.step(recorded, signing, wanted, spec.rotation, facts, overlap=self._overlap)

    async def _material(
        self, spec: IssuerSpec, body: Obj, known: list[bytes], bootstrap: list[str]
    ) -> IssuerMaterial:
        """The material of the key the spec names, bootstrapping its CA if needed."""
        signer = self.signer(spec.key_version, spec)
        kms_key = await signer.public_key()
        self.note_key_fact(
            spec.key_version, "KeyVersionInUse", f"{spec.ref} signs with {kms_key.algorithm}"
        )
        chain = await self._ca_chain(
            spec, kms_key, signer, known, bootstrap, may_bootstrap=self.leads(issuer_id(body))
        )
        return IssuerMaterial(spec, signer, kms_key, chain, self._ssh_line(spec, kms_key))

    async def _anchor_material(self, spec: IssuerSpec, anchor: rotation.Anchor) -> IssuerMaterial:
        """The material of a key a rollover keeps signing with: its CA chain comes from the
        status, since the spec (and a CA Secret) may already be about the next key."""
        signer = self.signer(anchor.key_version)
        kms_key = await signer.public_key()
        chain = None
        if spec.x509_enabled:
            if not anchor.ca_bundle:
                raise SpecError(
                    Reason.CA_SECRET_INVALID,
                    f"status.rotation holds no CA chain for {anchor.key_version}",
                )
            try:
                chain = parse_ca_chain(anchor.ca_bundle.encode(), kms_key.public_key)
            except ValueError as error:
                raise SpecError(
                    Reason.CA_SECRET_INVALID, f"CA chain of {anchor.key_version}: {error}"
                ) from None
        return IssuerMaterial(spec, signer, kms_key, chain, self._ssh_line(spec, kms_key))

    @staticmethod
    def _ssh_line(spec: IssuerSpec, kms_key: KmsPublicKey) -> str | None:
        if not spec.ssh_enabled:
            return None
        try:
            pki_ssh.check_ssh_ca_algorithm(kms_key.algorithm)
        except ValueError as error:
            raise SpecError(Reason.SSH_UNSUPPORTED_KEY, str(error)) from None
        return pki_ssh.public_key_line(kms_key.public_key, f"signet-{spec.name}")

    async def _ca_chain(
        self,
        spec: IssuerSpec,
        kms_key: KmsPublicKey,
        signer: Signer,
        known: list[bytes],
        bootstrap: list[str],
        *,
        may_bootstrap: bool = True,
    ) -> CaChain | None:
        """The issuer's CA chain; a self-signed bootstrap appends the audit id of its
        signature to ``bootstrap``."""
        if spec.ca_secret is not None:
            namespace = spec.namespace or spec.ca_secret.namespace or self._operator_namespace
            secret = await self._api.get_secret(namespace, spec.ca_secret.name)
            if secret is None:
                raise SpecError(
                    Reason.CA_SECRET_NOT_FOUND,
                    f"CA Secret {namespace}/{spec.ca_secret.name} not found",
                )
            encoded = (secret.get("data") or {}).get(spec.ca_secret.key)
            if not encoded:
                raise SpecError(
                    Reason.CA_SECRET_INVALID,
                    f"CA Secret {namespace}/{spec.ca_secret.name} has no {spec.ca_secret.key!r}",
                )
            try:
                return parse_ca_chain(base64.b64decode(encoded), kms_key.public_key)
            except ValueError as error:
                raise SpecError(
                    Reason.CA_SECRET_INVALID,
                    f"CA Secret {namespace}/{spec.ca_secret.name}: {error}",
                ) from None
        if spec.self_signed is None:
            return None
        for candidate in known:
            existing = _usable_self_signed(candidate, kms_key, spec)
            if existing is not None:
                return CaChain((existing,))
        if not may_bootstrap:
            raise SpecError(
                Reason.ISSUER_NOT_READY,
                f"{spec.ref}: waiting for the replica that owns this issuer to bootstrap its "
                "CA into status.caCertificate (sharding)",
            )
        self_signed = spec.self_signed
        subject = _ca_subject(self_signed.common_name, self_signed.organization)
        now = datetime.datetime.now(datetime.UTC)
        serial = pki_x509.random_serial_number()
        fields: dict[str, Any] = {
            "purpose": "ca-bootstrap",
            "outcome": "signed",
            "issuer": spec.ref,
            "keyVersion": spec.key_version,
            "keyAlgorithm": kms_key.algorithm,
            "serialNumber": format(serial, "x"),
            "subject": subject.rfc4514_string(),
            "notBefore": timestamp_or_none(now - pki_x509.BACKDATE),
            "notAfter": timestamp_or_none(now + self_signed.duration),
        }
        certificate = await kmskey.sign_in_thread(
            signer,
            lambda ca: pki_x509.build_self_signed_ca(
                ca,
                subject,
                self_signed.duration,
                trust_domain=spec.trust_domain,
                now=now,
                serial=serial,
            ),
            on_signed=lambda: bootstrap.append(self._audit.signature(**fields)),
        )
        logger.info("bootstrapped self-signed CA for %s with %s", spec.ref, spec.key_version)
        return CaChain((certificate,))

    async def _write_status(self, body: Obj, state: IssuerState) -> bool:
        """Whether the status needed writing (it did not already say this state)."""
        current = body.get("status") or {}
        desired = issuerstatus.desired(
            current,
            state.material,
            state.rollover,
            ready=state.ready,
            reason=state.reason,
            message=state.message,
            generation=body["metadata"].get("generation"),
        )
        patch = issuerstatus.patch(current, desired)
        if patch is None:
            return False
        kind, namespace, name = issuer_id(body)
        await self._api.patch_status(kind, namespace or None, name, patch)
        return True


def _next_look(state: IssuerState) -> float:
    step = state.step
    if step is None or step.next_look is None:
        return RECHECK.total_seconds()
    wait = (step.next_look - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(max(wait, 0.0), RECHECK.total_seconds())


def _ca_serial(material: IssuerMaterial | None) -> str | None:
    if material is None or material.chain is None:
        return None
    return format(material.chain.issuer.serial_number, "x")


def _material_key(material: IssuerMaterial | None) -> tuple[str, str, str] | None:
    if material is None:
        return None
    return (
        material.kms_key.key_version,
        material.ca_key_id(False) or "",
        material.ssh_ca_line or "",
    )


def _ca_subject(common_name: str, organization: str | None) -> x509.Name:
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _usable_self_signed(
    pem: bytes, kms_key: KmsPublicKey, spec: IssuerSpec
) -> x509.Certificate | None:
    """A bootstrap CA made earlier, if it is still right for this key and spec.

    Reusing it keeps the trust anchor stable across restarts and spends no signature; a
    CA within the last third of its life is replaced so leaves never outlive their CA.
    """
    if spec.self_signed is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, fmt) != kms_key.public_key.public_bytes(der, fmt):
        return None
    if certificate.subject != _ca_subject(
        spec.self_signed.common_name, spec.self_signed.organization
    ):
        return None
    now = datetime.datetime.now(datetime.UTC)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    if now > certificate.not_valid_after_utc - lifetime / 3:
        return None
    return certificate

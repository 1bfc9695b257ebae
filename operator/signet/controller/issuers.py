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
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from signet.api import SpecError
from signet.api.issuer import IssuerSpec, parse_issuer_spec
from signet.api.times import timestamp_or_none
from signet.controller import status as st
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.decisions.certificate import retry_delay
from signet.issuance import IssuerMaterial
from signet.kms.cloudkms import CloudKmsSigner, RetryPolicy
from signet.kms.errors import KmsError, KmsKeyDisabled, KmsKeyNotFound
from signet.kms.limiter import SignLimiter
from signet.kms.signer import KmsPublicKey
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.pki import keys, kmskey
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
    ) -> None:
        self._api = api
        self._events = events
        self._audit = audit
        self._kms_client = kms_client
        self._limiter = limiter
        self._operator_namespace = operator_namespace
        self._on_change = on_change
        self._schedule = schedule
        self._observe_sign = observe_sign
        self._retry = retry
        self._signers: dict[str, CloudKmsSigner] = {}
        self.states: dict[IssuerId, IssuerState] = {}
        self.pending: dict[IssuerId, Obj] = {}
        self._key_facts: dict[str, str] = {}
        """Last fact audited per key version, so a fact is recorded when it changes."""

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

    def signer(self, key_version: str) -> CloudKmsSigner:
        """One signer per key version for the life of the process: its public key is
        fetched once and every Certificate shares its limiter."""
        signer = self._signers.get(key_version)
        if signer is None:
            signer = CloudKmsSigner(
                self._kms_client,
                key_version,
                limiter=self._limiter,
                observe=self._observe_sign,
                retry=self._retry,
            )
            self._signers[key_version] = signer
        return signer

    def observe(self, body: Obj, deleted: bool) -> None:
        ident = issuer_id(body)
        if deleted:
            self.pending.pop(ident, None)
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
        state = await self._resolve(ident, body, previous)
        if state.ready:
            state.failures = 0
            self._schedule(ident, RECHECK.total_seconds())
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
        try:
            await self._write_status(body, state)
        except ApiError as error:
            logger.warning("%s %s: status not written: %s", kind, name, error)
            self._schedule(ident, retry_delay(max(state.failures, 1)).total_seconds())
        else:
            if state.bootstrap is not None:
                self._audit.delivery(
                    state.bootstrap,
                    outcome="published",
                    issuer=f"{kind}/{namespace + '/' if namespace else ''}{name}",
                    serialNumber=_ca_serial(state.material),
                    target="status.caCertificate",
                )
                state.bootstrap = None
        if changed:
            if state.ready:
                self._events.post(body, type="Normal", reason="Ready", message=state.message)
            else:
                self._events.post(body, type="Warning", reason=state.reason, message=state.message)
            self._on_change(ident)

    async def _resolve(
        self, ident: IssuerId, body: Obj, previous: IssuerState | None
    ) -> IssuerState:
        kind, namespace, name = ident
        try:
            spec = parse_issuer_spec(kind, name, namespace or None, body.get("spec") or {})
        except SpecError as error:
            return IssuerState(False, error.reason, error.message)
        signer = self.signer(spec.key_version)
        bootstrap: list[str] = []
        try:
            kms_key = await signer.public_key()
            self.note_key_fact(
                spec.key_version, "KeyVersionInUse", f"{spec.ref} signs with {kms_key.algorithm}"
            )
            chain = await self._ca_chain(spec, kms_key, signer, body, previous, bootstrap)
        except KmsError as error:
            self.note_kms_error(error)
            return IssuerState(False, error.reason, str(error), spec)
        except kmskey.SignatureSpentError as error:
            for signature in bootstrap:
                self._audit.delivery(
                    signature, outcome="discarded", reason="BuildFailed", message=str(error)
                )
            return IssuerState(False, Reason.INTERNAL_ERROR, str(error), spec)
        except SpecError as error:
            return IssuerState(False, error.reason, error.message, spec)
        ssh_line = None
        if spec.ssh_enabled:
            try:
                pki_ssh.check_ssh_ca_algorithm(kms_key.algorithm)
            except ValueError as error:
                return IssuerState(False, Reason.SSH_UNSUPPORTED_KEY, str(error), spec)
            ssh_line = pki_ssh.public_key_line(kms_key.public_key, f"signet-{name}")
        material = IssuerMaterial(spec, signer, kms_key, chain, ssh_line)
        what = ", ".join(p for p in ("X.509" if chain else "", "SSH" if ssh_line else "") if p)
        return IssuerState(
            True,
            Reason.KEY_READY,
            f"signing {what} with {spec.key_version} ({kms_key.algorithm})",
            spec,
            material,
            bootstrap=bootstrap[0] if bootstrap else None,
        )

    async def _ca_chain(
        self,
        spec: IssuerSpec,
        kms_key: KmsPublicKey,
        signer: CloudKmsSigner,
        body: Obj,
        previous: IssuerState | None,
        bootstrap: list[str],
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
        # The one in status, else one this process bootstrapped and could not publish yet:
        # a failed status write must not cost a second bootstrap signature.
        pem = (body.get("status") or {}).get("caCertificate")
        remembered = previous.material if previous is not None else None
        candidates = [pem.encode()] if isinstance(pem, str) else []
        if remembered is not None and remembered.chain is not None:
            candidates.append(remembered.chain.issuer.public_bytes(serialization.Encoding.PEM))
        for candidate in candidates:
            existing = _usable_self_signed(candidate, kms_key, spec)
            if existing is not None:
                return CaChain((existing,))
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

    async def _write_status(self, body: Obj, state: IssuerState) -> None:
        now = datetime.datetime.now(datetime.UTC)
        current = body.get("status") or {}
        previous = st.conditions_by_type(current).get("Ready")
        generation = body["metadata"].get("generation")
        desired: Obj = {
            "conditions": [
                st.condition(
                    "Ready",
                    "True" if state.ready else "False",
                    state.reason,
                    state.message,
                    generation=generation,
                    previous=previous,
                    now=now,
                )
            ],
            "observedGeneration": generation,
        }
        material = state.material
        if material is not None:
            desired["keyAlgorithm"] = material.kms_key.algorithm
            if material.chain is not None:
                pem = serialization.Encoding.PEM
                ca = material.chain.issuer
                desired["caCertificate"] = ca.public_bytes(pem).decode()
                desired["caBundle"] = b"".join(
                    c.public_bytes(pem) for c in material.chain.certificates
                ).decode()
                desired["caFingerprint"] = ca.fingerprint(hashes.SHA256()).hex()
                desired["caNotAfter"] = timestamp_or_none(ca.not_valid_after_utc)
            if material.ssh_ca_line is not None:
                desired["sshCAPublicKey"] = material.ssh_ca_line
                desired["sshCAFingerprint"] = keys.openssh_fingerprint(material.kms_key.public_key)
        elif current.get("caCertificate"):
            desired["caCertificate"] = current[
                "caCertificate"
            ]  # keep the bootstrap CA across outages
        patch = st.status_patch(current, desired)
        if patch is None:
            return
        kind, namespace, name = issuer_id(body)
        await self._api.patch_status(kind, namespace or None, name, patch)


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

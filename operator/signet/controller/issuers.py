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
from signet.controller import status as st
from signet.controller.kubeapi import KubeApi, Obj
from signet.issuance import IssuerMaterial
from signet.kms.cloudkms import CloudKmsSigner, KmsError, RetryPolicy, SignLimiter
from signet.kms.signer import KmsPublicKey
from signet.observe.events import EventPoster
from signet.pki import keys, kmskey
from signet.pki import ssh as pki_ssh
from signet.pki import x509 as pki_x509
from signet.pki.chain import CaChain, parse_ca_chain
from signet.renewal.decisions import retry_delay

logger = logging.getLogger(__name__)

IssuerId = tuple[str, str, str]
"""(kind, namespace or "", name)."""

RECHECK = datetime.timedelta(minutes=10)
"""How often a ready issuer is re-verified (key still enabled, CA Secret unchanged)."""


@dataclass
class IssuerState:
    ready: bool
    reason: str
    message: str
    spec: IssuerSpec | None = None
    material: IssuerMaterial | None = None
    failures: int = 0


def issuer_id(body: Obj) -> IssuerId:
    metadata = body["metadata"]
    return (body["kind"], metadata.get("namespace") or "", metadata["name"])


class IssuerController:
    def __init__(
        self,
        api: KubeApi,
        events: EventPoster,
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
            body = await self._api.get_object(kind, namespace or None, name)
            if body is None:
                self.states.pop(ident, None)
                return
        previous = self.states.get(ident)
        state = await self._resolve(ident, body)
        if state.ready:
            state.failures = 0
            self._schedule(ident, RECHECK.total_seconds())
        else:
            state.failures = (previous.failures if previous else 0) + 1
            if state.reason not in (
                "InvalidSpec",
                "InvalidKeyVersion",
                "InvalidTrustDomain",
                "InvalidPolicy",
            ):
                self._schedule(ident, retry_delay(state.failures).total_seconds())
        self.states[ident] = state
        changed = (
            previous is None
            or previous.ready != state.ready
            or previous.spec != state.spec
            or _material_key(previous.material) != _material_key(state.material)
        )
        await self._write_status(body, state)
        if changed:
            if state.ready:
                self._events.post(body, type="Normal", reason="Ready", message=state.message)
            else:
                self._events.post(body, type="Warning", reason=state.reason, message=state.message)
            self._on_change(ident)

    async def _resolve(self, ident: IssuerId, body: Obj) -> IssuerState:
        kind, namespace, name = ident
        try:
            spec = parse_issuer_spec(kind, name, namespace or None, body.get("spec") or {})
        except SpecError as error:
            return IssuerState(False, error.reason, error.message)
        signer = self.signer(spec.key_version)
        try:
            kms_key = await signer.public_key()
            chain = await self._ca_chain(spec, kms_key, signer, body)
        except KmsError as error:
            return IssuerState(False, error.reason, str(error), spec)
        except SpecError as error:
            return IssuerState(False, error.reason, error.message, spec)
        ssh_line = None
        if spec.ssh_enabled:
            try:
                pki_ssh.check_ssh_ca_algorithm(kms_key.algorithm)
            except ValueError as error:
                return IssuerState(False, "SSHUnsupportedKey", str(error), spec)
            ssh_line = pki_ssh.public_key_line(kms_key.public_key, f"signet-{name}")
        material = IssuerMaterial(spec, signer, kms_key, chain, ssh_line)
        what = ", ".join(p for p in ("X.509" if chain else "", "SSH" if ssh_line else "") if p)
        return IssuerState(
            True,
            "KeyReady",
            f"signing {what} with {spec.key_version} ({kms_key.algorithm})",
            spec,
            material,
        )

    async def _ca_chain(
        self, spec: IssuerSpec, kms_key: KmsPublicKey, signer: CloudKmsSigner, body: Obj
    ) -> CaChain | None:
        if spec.ca_secret is not None:
            namespace = spec.namespace or spec.ca_secret.namespace or self._operator_namespace
            secret = await self._api.get_secret(namespace, spec.ca_secret.name)
            if secret is None:
                raise SpecError(
                    "CASecretNotFound", f"CA Secret {namespace}/{spec.ca_secret.name} not found"
                )
            encoded = (secret.get("data") or {}).get(spec.ca_secret.key)
            if not encoded:
                raise SpecError(
                    "CASecretInvalid",
                    f"CA Secret {namespace}/{spec.ca_secret.name} has no {spec.ca_secret.key!r}",
                )
            try:
                return parse_ca_chain(base64.b64decode(encoded), kms_key.public_key)
            except ValueError as error:
                raise SpecError(
                    "CASecretInvalid", f"CA Secret {namespace}/{spec.ca_secret.name}: {error}"
                ) from None
        if spec.self_signed is None:
            return None
        existing = _usable_self_signed(body, kms_key, spec)
        if existing is not None:
            return CaChain((existing,))
        self_signed = spec.self_signed
        certificate = await kmskey.sign_in_thread(
            signer,
            lambda ca: pki_x509.build_self_signed_ca(
                ca,
                _ca_subject(self_signed.common_name, self_signed.organization),
                self_signed.duration,
                trust_domain=spec.trust_domain,
            ),
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
                desired["caNotAfter"] = st.timestamp(ca.not_valid_after_utc)
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
    body: Obj, kms_key: KmsPublicKey, spec: IssuerSpec
) -> x509.Certificate | None:
    """The bootstrap CA already in status, if it is still right for this key and spec.

    Reusing it keeps the trust anchor stable across restarts and spends no signature; a
    CA within the last third of its life is replaced so leaves never outlive their CA.
    """
    pem = (body.get("status") or {}).get("caCertificate")
    if not pem or spec.self_signed is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
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

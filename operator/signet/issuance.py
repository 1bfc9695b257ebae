"""From a parsed Certificate and a ready issuer to the bytes of a Secret.

This is the one place that spends a KMS signature on a workload: generate (or reuse) the
leaf key, build the certificate, sign it once through the issuer's KMS key, and lay the
result out as cert-manager-compatible Secret data plus descriptive annotations. No
Kubernetes client here; the controller writes what this returns.

What a certificate will say (serial, validity, names, key) is settled before KMS is asked,
so its audit record can be written the moment the signature exists, from the signing
thread, before anything else can happen to it.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet.api.certificate import CertificateSpec
from signet.api.issuer import IssuerSpec
from signet.api.times import timestamp
from signet.decisions.leaf import leaf_request
from signet.decisions.rotation import Anchor
from signet.kms.signer import KmsPublicKey, Signer
from signet.pki import keys, kmskey
from signet.pki import ssh as pki_ssh
from signet.pki import x509 as pki_x509
from signet.pki.chain import CaChain
from signet.policy import spiffe_id
from signet.secretformat import layout

PEM = serialization.Encoding.PEM

SignatureRecorder = Callable[[dict[str, Any]], str]
"""Writes the audit record of a signature from what issuance knows of it (serial,
validity, names, subject key) and returns the record's id. Called once per signature, in
the signing thread, as soon as KMS answers."""


@dataclass(frozen=True)
class IssuerMaterial:
    """What a ready issuer signs with, resolved once per issuer change, not per certificate."""

    spec: IssuerSpec
    signer: Signer
    kms_key: KmsPublicKey
    chain: CaChain | None
    ssh_ca_line: str | None

    def ca_key_id(self, ssh: bool) -> str | None:
        """How a Secret's certificate names its signer; see SecretSummary.ca_key_id.
        Asked on every reconcile, so worked out once per material."""
        return self._ssh_ca_key_id if ssh else self._x509_ca_key_id

    @functools.cached_property
    def anchor(self) -> Anchor:
        """This key's anchor, as a rotation records it in status."""
        bundle = None
        if self.chain is not None:
            bundle = b"".join(c.public_bytes(PEM) for c in self.chain.certificates).decode()
        return Anchor(self.kms_key.key_version, bundle, self.ssh_ca_line)

    @functools.cached_property
    def _ssh_ca_key_id(self) -> str:
        return keys.openssh_fingerprint(self.kms_key.public_key)

    @functools.cached_property
    def _x509_ca_key_id(self) -> str | None:
        if self.chain is None:
            return None
        ski = self.chain.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ski.value.digest.hex()


@dataclass(frozen=True)
class TrustSet:
    """Every anchor peers of an issuer's leaves must trust now: the signing key's alone
    when stable, both keys' during a rotation (signing key first)."""

    ca_certificates: tuple[str, ...] = ()
    """PEM trust anchors (the top of each key's chain), without duplicates."""
    ssh_ca_lines: tuple[str, ...] = ()

    @classmethod
    def of(cls, anchors: Iterable[Anchor]) -> TrustSet:
        pems: list[str] = []
        lines: list[str] = []
        for anchor in anchors:
            if anchor.ca_bundle:
                top = x509.load_pem_x509_certificates(anchor.ca_bundle.encode())[-1]
                pems.append(top.public_bytes(PEM).decode())
            if anchor.ssh_ca_line:
                lines.append(anchor.ssh_ca_line)
        return cls(tuple(dict.fromkeys(pems)), tuple(dict.fromkeys(lines)))


@dataclass(frozen=True)
class Issued:
    """A freshly signed identity, ready to be written."""

    secret_type: str
    data: dict[str, bytes] = field(repr=False)
    """Holds the private key: kept out of repr, so no log line or traceback can show it."""
    annotations: dict[str, str]
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    public_key_fingerprint: str
    signature: str
    """The audit id of the signature record."""
    spiffe_id: str | None = None


async def _leaf_key(
    spec: CertificateSpec, reuse: keys.LeafPrivateKey | None
) -> keys.LeafPrivateKey:
    if reuse is not None:
        return reuse
    algorithm, size = spec.private_key.algorithm, spec.private_key.size
    if algorithm == "RSA":  # seconds of CPU for 4096 bits: keep it off the event loop
        return await asyncio.to_thread(keys.generate_private_key, algorithm, size)
    return keys.generate_private_key(algorithm, size)


async def issue(
    material: IssuerMaterial,
    spec: CertificateSpec,
    *,
    namespace: str,
    name: str,
    record: SignatureRecorder,
    reuse_key: keys.LeafPrivateKey | None = None,
) -> Issued:
    """Sign one identity. Raises ValueError for requests pki refuses, KmsError for KMS and
    SignatureSpentError (its ``signature`` set) for a signature that could not be used."""
    key = await _leaf_key(spec, reuse_key)
    if spec.ssh is not None:
        return await _issue_ssh(material, spec, namespace, name, key, record)
    return await _issue_x509(material, spec, namespace, key, record)


async def _sign_recorded(
    material: IssuerMaterial,
    build: Callable[[kmskey.KmsPrivateKey], Any],
    record: SignatureRecorder,
    fields: dict[str, Any],
) -> tuple[Any, str]:
    recorded: list[str] = []
    try:
        result = await kmskey.sign_in_thread(
            material.signer, build, on_signed=lambda: recorded.append(record(fields))
        )
    except kmskey.SignatureSpentError as error:
        error.signature = recorded[0] if recorded else None
        raise
    return result, recorded[0]


def _audited_names(request: pki_x509.LeafRequest) -> dict[str, Any]:
    """What a signature record says the leaf names: every kind of name, even where it
    names none, so records of every path read alike."""
    return {
        "spiffeID": request.spiffe_id,
        "subject": request.subject().rfc4514_string(),
        "dnsNames": list(request.dns_names),
        "ipAddresses": list(request.ip_addresses),
        "uris": [*request.uris, *([request.spiffe_id] if request.spiffe_id else [])],
        "emailAddresses": list(request.email_addresses),
    }


async def _sign_leaf(
    material: IssuerMaterial,
    chain: CaChain,
    request: pki_x509.LeafRequest,
    public_key: PublicKeyTypes,
    now: datetime.datetime,
    record: SignatureRecorder,
) -> tuple[x509.Certificate, str]:
    """Sign one X.509 leaf, its audit record (serial, validity, key and names) settled
    before KMS is asked; returns the leaf and the record's id."""
    serial_number = pki_x509.random_serial_number()
    not_before, not_after = pki_x509.leaf_validity(chain.issuer, now, request.duration)
    leaf: x509.Certificate
    leaf, signature = await _sign_recorded(
        material,
        lambda ca: pki_x509.build_leaf(
            request, public_key, chain.issuer, ca, now=now, serial=serial_number
        ),
        record,
        {
            "serialNumber": format(serial_number, "x"),
            "notBefore": timestamp(not_before),
            "notAfter": timestamp(not_after),
            "publicKeyFingerprint": keys.spki_fingerprint(public_key),
            **_audited_names(request),
        },
    )
    return leaf, signature


async def _issue_x509(
    material: IssuerMaterial,
    spec: CertificateSpec,
    namespace: str,
    key: keys.LeafPrivateKey,
    record: SignatureRecorder,
) -> Issued:
    request_spec = spec.x509
    chain = material.chain
    assert request_spec is not None and chain is not None
    svid = (
        spiffe_id(material.spec.trust_domain, namespace, request_spec.spiffe_service_account)
        if request_spec.spiffe_service_account
        else None
    )
    request = leaf_request(request_spec, spiffe_id=svid, duration=spec.duration)
    public_key = key.public_key()
    uris = [*request_spec.uris, *([svid] if svid else [])]
    leaf, signature = await _sign_leaf(
        material, chain, request, public_key, datetime.datetime.now(datetime.UTC), record
    )
    serial = format(leaf.serial_number, "x")
    annotations = {
        layout.SERIAL: serial,
        layout.NOT_BEFORE: timestamp(leaf.not_valid_before_utc),
        layout.NOT_AFTER: timestamp(leaf.not_valid_after_utc),
        layout.COMMON_NAME: request_spec.common_name or "",
        layout.ALT_NAMES: ",".join(request_spec.dns_names),
        layout.IP_SANS: ",".join(request_spec.ip_addresses),
        layout.URI_SANS: ",".join(uris),
        layout.EMAIL_SANS: ",".join(request_spec.email_addresses),
    }
    if svid:
        annotations[layout.SPIFFE_ID] = svid
    return Issued(
        secret_type=layout.TLS_TYPE,
        data={
            layout.TLS_CERT: chain.leaf_chain_pem(leaf),
            layout.TLS_KEY: keys.private_key_to_pem(key, spec.outputs.key_encoding),
            layout.CA_CERT: chain.trust_anchor.public_bytes(PEM),
        },
        annotations={k: v for k, v in annotations.items() if v},
        serial=serial,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        public_key_fingerprint=keys.spki_fingerprint(public_key),
        signature=signature,
        spiffe_id=svid,
    )


async def _issue_ssh(
    material: IssuerMaterial,
    spec: CertificateSpec,
    namespace: str,
    name: str,
    key: keys.LeafPrivateKey,
    record: SignatureRecorder,
) -> Issued:
    ssh_spec = spec.ssh
    assert ssh_spec is not None and material.ssh_ca_line is not None
    request = pki_ssh.SshCertRequest(
        cert_type="user" if ssh_spec.cert_type == "user" else "host",
        key_id=ssh_spec.key_id or f"{namespace}/{name}",
        principals=ssh_spec.principals,
        duration=spec.duration,
        force_command=ssh_spec.force_command,
        source_addresses=ssh_spec.source_address,
        extensions=ssh_spec.extensions,
    )
    public_key = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    serial_number = secrets.randbits(64)
    not_before, not_after = pki_ssh.validity(now, request.duration)
    serial = str(serial_number)
    fingerprint = keys.openssh_fingerprint(public_key)
    certificate, signature = await _sign_recorded(
        material,
        lambda ca: pki_ssh.build_ssh_certificate(
            request, public_key, ca, now=now, serial=serial_number
        ),
        record,
        {
            "serialNumber": serial,
            "notBefore": timestamp(not_before),
            "notAfter": timestamp(not_after),
            "publicKeyFingerprint": fingerprint,
            "sshType": request.cert_type,
            "keyId": request.key_id,
            "principals": list(request.principals),
            "criticalOptions": {k.decode(): v.decode() for k, v in request.critical_options()},
            "extensions": list(request.effective_extensions()),
        },
    )
    return Issued(
        secret_type=layout.SSH_TYPE,
        data={
            layout.SSH_PRIVATE_KEY: keys.private_key_to_openssh(key),
            layout.SSH_PUBLIC_KEY: (
                pki_ssh.public_key_line(public_key, request.key_id) + "\n"
            ).encode(),
            layout.SSH_CERTIFICATE: certificate.public_bytes() + b"\n",
            layout.SSH_CA: (material.ssh_ca_line + "\n").encode(),
        },
        annotations={
            layout.SERIAL: serial,
            layout.NOT_BEFORE: timestamp(not_before),
            layout.NOT_AFTER: timestamp(not_after),
            layout.SSH_PRINCIPALS: ",".join(request.principals),
            layout.SSH_KEY_ID: request.key_id,
        },
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        public_key_fingerprint=fingerprint,
        signature=signature,
    )


@dataclass(frozen=True)
class IssuedLeaf:
    """A certificate for a key Signet never held (a PodCertificateRequest's or a
    CertificateSigningRequest's): no Secret, just the chain and what the request's status
    must repeat of it."""

    chain_pem: bytes
    """The leaf, then the intermediates: what relying parties are shown."""
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    public_key_fingerprint: str
    signature: str
    """The audit id of the signature record."""
    spiffe_id: str | None


async def issue_for_public_key(
    material: IssuerMaterial,
    public_key: PublicKeyTypes,
    request: pki_x509.LeafRequest,
    *,
    minimum: datetime.timedelta,
    record: SignatureRecorder,
) -> IssuedLeaf:
    """Sign the leaf ``request`` names for ``public_key``, the requester's. The certificate
    spans exactly ``request.duration`` from its backdated notBefore (a requester that
    capped the lifetime, as the apiserver does for pod certificates, counts from
    notBefore), or less where the CA ends sooner; less than ``minimum`` is refused before
    KMS is asked. Raises as `issue` does."""
    chain = material.chain
    if chain is None:
        raise ValueError(f"{material.spec.ref} has no X.509 CA")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    duration = request.duration - pki_x509.BACKDATE
    not_before, not_after = pki_x509.leaf_validity(chain.issuer, now, duration)
    if not_after - not_before < minimum:
        expires = timestamp(chain.issuer.not_valid_after_utc)
        raise ValueError(
            f"the CA of {material.spec.ref} expires at {expires}: too soon for a certificate "
            "of the shortest lifetime allowed"
        )
    backdated = replace(request, duration=duration)
    leaf, signature = await _sign_leaf(material, chain, backdated, public_key, now, record)
    return IssuedLeaf(
        chain_pem=chain.leaf_chain_pem(leaf),
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        public_key_fingerprint=keys.spki_fingerprint(public_key),
        signature=signature,
        spiffe_id=request.spiffe_id,
    )

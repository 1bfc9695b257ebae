"""Decode what Signet issued into something a human can check at a glance.

``signet inspect`` and the demo's summary both go through here, so "what the demo shows"
and "what an operator sees in production" cannot drift apart. Private keys are loaded
only to answer "does it match the certificate?"; nothing derived from them but that
yes/no ever reaches the output.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from signet.api.times import timestamp
from signet.pki import keys
from signet.secretformat import layout

Rows = list[tuple[str, str]]

_SIGNATURE_NAMES = {
    oid: name.replace("_WITH_", "-with-").replace("_", "-")
    for name, oid in vars(SignatureAlgorithmOID).items()
    if isinstance(oid, x509.ObjectIdentifier)
}
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server auth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "client auth",
    ExtendedKeyUsageOID.CODE_SIGNING: "code signing",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "email protection",
}
_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_FOREVER = 2**64 - 1


class InspectError(ValueError):
    """The input is not something Signet issues; the message never quotes the input."""


def _span(delta: datetime.timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{seconds % 60}s"


def validity(
    not_before: datetime.datetime, not_after: datetime.datetime | None, now: datetime.datetime
) -> str:
    """``from .. to .. (lifetime, expires in ..)``: the one line people actually read."""
    if not_after is None:
        return f"from {timestamp(not_before)}, never expires"
    state = (
        f"not valid yet, starts in {_span(not_before - now)}"
        if now < not_before
        else f"expires in {_span(not_after - now)}"
        if now < not_after
        else f"EXPIRED {_span(now - not_after)} ago"
    )
    span = _span(not_after - not_before)
    return f"{timestamp(not_before)} to {timestamp(not_after)} ({span}, {state})"


def key_algorithm(public_key: PublicKeyTypes) -> str:
    """``ECDSA P-256``, ``RSA 2048``, ``Ed25519``: the names the Certificate API uses."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(public_key.curve.name, public_key.curve.name)}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public_key).__name__


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def _yes_no(value: bool | None, yes: str, no: str) -> str:
    if value is None:
        return "not checked (no private key given)"
    return yes if value else no


@dataclass(frozen=True)
class X509Details:
    """The facts of one leaf certificate (plus its chain, when we have it)."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    email_addresses: tuple[str, ...]
    key_algorithm: str
    signature_algorithm: str
    sha256_fingerprint: str
    spki_sha256: str
    is_ca: bool
    key_usages: tuple[str, ...]
    extended_key_usages: tuple[str, ...]
    chain: tuple[str, ...] = ()
    """Subjects of the certificates after the leaf in tls.crt, in order."""
    chain_check: str | None = None
    key_matches: bool | None = None

    @property
    def spiffe_id(self) -> str | None:
        return next((u for u in self.uris if u.startswith("spiffe://")), None)

    def rows(self, now: datetime.datetime) -> Rows:
        other_uris = [u for u in self.uris if u != self.spiffe_id]
        rows: Rows = [
            ("Subject", self.subject or "(empty)"),
            ("SPIFFE ID", self.spiffe_id or "(none)"),
            ("DNS names", ", ".join(self.dns_names) or "(none)"),
        ]
        for label, values in (
            ("IP addresses", self.ip_addresses),
            ("URIs", tuple(other_uris)),
            ("Emails", self.email_addresses),
        ):
            if values:
                rows.append((label, ", ".join(values)))
        rows += [
            ("Issuer", self.issuer),
            ("Serial", self.serial),
            ("Validity", validity(self.not_before, self.not_after, now)),
            ("Key algorithm", self.key_algorithm),
            ("Signature", self.signature_algorithm),
            ("Key usage", ", ".join(self.key_usages) or "(none)"),
            ("Extended usage", ", ".join(self.extended_key_usages) or "(none)"),
            ("CA", "yes" if self.is_ca else "no"),
            ("SHA-256", self.sha256_fingerprint),
            ("SPKI SHA-256", self.spki_sha256),
        ]
        if self.chain:
            rows.append(("Chain", " <- ".join(self.chain)))
        if self.chain_check is not None:
            rows.append(("Chain check", self.chain_check))
        rows.append(
            ("Private key", _yes_no(self.key_matches, "matches the certificate", "DOES NOT MATCH"))
        )
        return rows


@dataclass(frozen=True)
class SshDetails:
    """The facts of one OpenSSH certificate."""

    cert_type: str
    key_type: str
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: datetime.datetime
    valid_before: datetime.datetime | None
    critical_options: Mapping[str, str]
    extensions: tuple[str, ...]
    key_fingerprint: str
    ca_fingerprint: str
    signature_valid: bool
    ca_matches_bundle: bool | None = None
    key_matches: bool | None = None

    def rows(self, now: datetime.datetime) -> Rows:
        options = ", ".join(f"{k} {v}".strip() for k, v in sorted(self.critical_options.items()))
        rows: Rows = [
            ("Type", f"{self.cert_type} certificate ({self.key_type})"),
            ("Key ID", self.key_id),
            ("Principals", ", ".join(self.principals) or "(none: any principal)"),
            ("Serial", str(self.serial)),
            ("Validity", validity(self.valid_after, self.valid_before, now)),
            ("Critical options", options or "(none)"),
            ("Extensions", ", ".join(self.extensions) or "(none)"),
            ("Key fingerprint", self.key_fingerprint),
            ("CA fingerprint", self.ca_fingerprint),
            ("CA signature", "valid" if self.signature_valid else "INVALID"),
        ]
        if self.ca_matches_bundle is not None:
            rows.append(
                (
                    "CA in Secret",
                    "same key (ssh-ca.pub)" if self.ca_matches_bundle else "DIFFERENT KEY",
                )
            )
        rows.append(
            ("Private key", _yes_no(self.key_matches, "matches the certificate", "DOES NOT MATCH"))
        )
        return rows


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str], list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], [], []
    return (
        san.get_values_for_type(x509.DNSName),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        san.get_values_for_type(x509.UniformResourceIdentifier),
        san.get_values_for_type(x509.RFC822Name),
    )


def _usages(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    ku: list[str] = []
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        for attr in _KEY_USAGES:
            if getattr(usage, attr):
                ku.append(attr.replace("_", " "))
    except x509.ExtensionNotFound:
        pass
    try:
        eku_ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku_ext)
    except x509.ExtensionNotFound:
        eku = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return tuple(ku), eku, is_ca


def _check_chain(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> str:
    """Each certificate signed by the next, the last by one of ``anchors``.

    Signatures only: enough to catch a Secret whose ca.crt is from another issuer, which
    is the mistake people actually make; full path validation is the TLS library's job.
    """
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return f"BROKEN: {child.subject.rfc4514_string()} not signed by the next certificate"
    top = chain[-1]
    for anchor in anchors:
        if top == anchor:
            return "valid: the trust anchor itself"
        try:
            top.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return f"valid: signed by {anchor.subject.rfc4514_string()} (ca.crt)"
    return "BROKEN: no certificate in ca.crt signed this chain"


def describe_x509(
    tls_crt: bytes, *, tls_key: bytes | None = None, ca_crt: bytes | None = None
) -> X509Details:
    """Decode a PEM (or DER) leaf, optional chain after it, and check key and ca.crt."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in tls_crt:
            chain = x509.load_pem_x509_certificates(tls_crt)
        else:
            chain = [x509.load_der_x509_certificate(tls_crt)]
    except ValueError:
        raise InspectError("not a PEM or DER X.509 certificate") from None
    leaf = chain[0]
    dns, ips, uris, emails = _sans(leaf)
    ku, eku, is_ca = _usages(leaf)
    key_matches: bool | None = None
    if tls_key is not None:
        try:
            key_matches = keys.private_key_matches(keys.load_private_key(tls_key), leaf)
        except ValueError:
            key_matches = False
    chain_check: str | None = None
    if ca_crt is not None:
        try:
            anchors = x509.load_pem_x509_certificates(ca_crt)
        except ValueError:
            chain_check = "BROKEN: ca.crt is not PEM certificates"
        else:
            chain_check = _check_chain(chain, anchors)
    public_key = leaf.public_key()
    return X509Details(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        uris=tuple(uris),
        email_addresses=tuple(emails),
        key_algorithm=key_algorithm(public_key),
        signature_algorithm=_SIGNATURE_NAMES.get(
            leaf.signature_algorithm_oid, leaf.signature_algorithm_oid.dotted_string
        ),
        sha256_fingerprint=_colon_hex(leaf.fingerprint(hashes.SHA256())),
        spki_sha256=keys.spki_fingerprint(public_key),
        is_ca=is_ca,
        key_usages=ku,
        extended_key_usages=eku,
        chain=tuple(c.subject.rfc4514_string() for c in chain[1:]),
        chain_check=chain_check,
        key_matches=key_matches,
    )


def describe_ssh(
    certificate: bytes, *, private_key: bytes | None = None, ca_public_key: bytes | None = None
) -> SshDetails:
    """Decode an OpenSSH certificate line and check its signature, key and CA."""
    try:
        cert = serialization.load_ssh_public_identity(certificate.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InspectError("not an OpenSSH certificate") from None
    if not isinstance(cert, serialization.SSHCertificate):
        raise InspectError("an OpenSSH public key, not a certificate")
    try:
        cert.verify_cert_signature()
        signature_valid = True
    except InvalidSignature:
        signature_valid = False
    ca_fingerprint = keys.openssh_fingerprint(cert.signature_key())
    ca_matches: bool | None = None
    if ca_public_key is not None:
        try:
            ca_key = serialization.load_ssh_public_key(ca_public_key.strip().split(b"\n")[0])
            ca_matches = keys.openssh_fingerprint(ca_key) == ca_fingerprint
        except (ValueError, UnsupportedAlgorithm):
            ca_matches = False
    key_matches: bool | None = None
    if private_key is not None:
        try:
            key_matches = keys.private_key_matches(keys.load_private_key(private_key), cert)
        except ValueError:
            key_matches = False
    utc = datetime.UTC
    return SshDetails(
        cert_type="user" if cert.type is serialization.SSHCertificateType.USER else "host",
        key_type=certificate.split()[0].decode(errors="replace"),
        key_id=cert.key_id.decode(errors="replace"),
        serial=cert.serial,
        principals=tuple(p.decode(errors="replace") for p in cert.valid_principals),
        valid_after=datetime.datetime.fromtimestamp(cert.valid_after, utc),
        valid_before=None
        if cert.valid_before >= _FOREVER
        else datetime.datetime.fromtimestamp(cert.valid_before, utc),
        critical_options={
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in cert.critical_options.items()
        },
        extensions=tuple(sorted(k.decode(errors="replace") for k in cert.extensions)),
        key_fingerprint=keys.openssh_fingerprint(cert.public_key()),
        ca_fingerprint=ca_fingerprint,
        signature_valid=signature_valid,
        ca_matches_bundle=ca_matches,
        key_matches=key_matches,
    )


@dataclass(frozen=True)
class SecretReport:
    """A Signet Secret: who it belongs to (annotations) and what it holds (details)."""

    namespace: str
    name: str
    secret_type: str
    annotations: Mapping[str, str]
    details: X509Details | SshDetails
    data_keys: tuple[str, ...] = field(default=())

    @property
    def key_version(self) -> str:
        return self.annotations.get(layout.KEY_VERSION, "")

    def origin_rows(self) -> Rows:
        a = self.annotations
        rows: Rows = [
            ("Secret", f"{self.namespace}/{self.name} ({self.secret_type})"),
            ("Data keys", ", ".join(self.data_keys)),
        ]
        if layout.CERTIFICATE_NAME in a:
            rows.append(("Certificate", f"{self.namespace}/{a[layout.CERTIFICATE_NAME]}"))
        if layout.ISSUER_NAME in a:
            rows.append(
                ("Issued by", f"{a.get(layout.ISSUER_KIND, 'Issuer')} {a[layout.ISSUER_NAME]}")
            )
        if self.key_version:
            rows.append(("KMS key version", self.key_version))
        if layout.ISSUED_AT in a:
            revision = a.get(layout.REVISION)
            rows.append(
                ("Issued at", a[layout.ISSUED_AT] + (f" (revision {revision})" if revision else ""))
            )
        return rows

    def rows(self, now: datetime.datetime) -> Rows:
        return self.origin_rows() + self.details.rows(now)


def _data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            out[key] = b""
    return out


def describe_secret(secret: Mapping[str, Any]) -> SecretReport:
    """Decode a Secret as returned by the API (``data`` base64-encoded)."""
    metadata = secret.get("metadata") or {}
    secret_type = secret.get("type") or "Opaque"
    data = _data(secret)
    details: X509Details | SshDetails
    if layout.SSH_CERTIFICATE in data:
        details = describe_ssh(
            data[layout.SSH_CERTIFICATE],
            private_key=data.get(layout.SSH_PRIVATE_KEY),
            ca_public_key=data.get(layout.SSH_CA),
        )
    elif layout.TLS_CERT in data:
        details = describe_x509(
            data[layout.TLS_CERT], tls_key=data.get(layout.TLS_KEY), ca_crt=data.get(layout.CA_CERT)
        )
    else:
        raise InspectError(
            f"Secret {metadata.get('namespace')}/{metadata.get('name')} has neither "
            f"{layout.TLS_CERT} nor {layout.SSH_CERTIFICATE}: not an identity Signet issued"
        )
    return SecretReport(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        secret_type=str(secret_type),
        annotations=dict(metadata.get("annotations") or {}),
        details=details,
        data_keys=tuple(sorted(data)),
    )


_PRIVATE_MARKERS = (b"PRIVATE KEY-----",)


def describe_file(
    content: bytes, key: bytes | None = None, ca: bytes | None = None
) -> X509Details | SshDetails:
    """A local file: PEM/DER X.509 (chain, maybe with its key) or an OpenSSH certificate."""
    stripped = content.lstrip()
    first = stripped.split(b" ", 1)[0]
    if first.endswith(b"-cert-v01@openssh.com"):
        return describe_ssh(stripped, private_key=key, ca_public_key=ca)
    if b"-----BEGIN CERTIFICATE-----" in content:
        if key is None and any(m in content for m in _PRIVATE_MARKERS):
            key = content  # a combined PEM: check the key in it, print nothing of it
        return describe_x509(content, tls_key=key, ca_crt=ca)
    if any(m in content for m in _PRIVATE_MARKERS):
        raise InspectError("this file holds only a private key; pass the certificate instead")
    return describe_x509(content, tls_key=key, ca_crt=ca)


def render(rows: Rows, indent: str = "") -> str:
    """Two aligned columns, kubectl-describe style."""
    width = max((len(label) for label, _ in rows), default=0) + 1
    return "\n".join(f"{indent}{label + ':':<{width}} {value}" for label, value in rows)

"""X.509 certificates signed by a KMS-held CA key: workload leaves and CA certificates.

Profile decisions, each made once here so the operator cannot get them subtly wrong:

* **Serial numbers** are 128 random bits (positive, non-zero): unpredictable, as the
  CA/Browser Forum requires 64+ bits of entropy, and well under the 20-octet limit.
* **notBefore** is backdated by :data:`BACKDATE` (one minute) so that a peer whose clock
  is a little behind ours does not reject a certificate that was just issued. It is never
  earlier than the issuer's own notBefore.
* **notAfter** is clamped to the issuer's notAfter, as cert-manager's CA issuer does: a
  leaf can never outlive the CA that vouches for it, and refusing to issue would turn an
  ageing CA into an outage. The operator sees the clamp in ``not_valid_after_utc`` and
  renews from that. An issuer that has already expired is an error.
* **Leaf keyUsage** is critical and always has digitalSignature (TLS 1.3 and every
  SPIFFE verifier need it). keyEncipherment is kept only for RSA keys: it means RSA key
  transport, RFC 5480 forbids it for EC keys, and cert-manager puts it in its default
  usages, so it is dropped rather than refused for EC and Ed25519 keys.
* **basicConstraints** is critical everywhere; leaves are CA:false.
* **SKI/AKI**: every certificate carries an SKI (RFC 5280 4.2.1.2 method 1, SHA-1 of the
  subjectPublicKey bits, what OpenSSL computes); AKI is taken from the issuer's SKI so
  chains link by key identifier even when subjects repeat.
* **SAN** is critical when the subject is empty (RFC 5280 4.2.1.6).
* **SPIFFE** X509-SVIDs have exactly one URI SAN, the SPIFFE ID, with a non-root path; if
  extended key usages are given they include serverAuth and clientAuth, and if none are
  given both are added (X509-SVID section 4.4).
"""

from __future__ import annotations

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from signet.pki.checks import check_validity, extension
from signet.pki.keys import LeafPublicKey, validate_public_key
from signet.pki.kmskey import KmsPrivateKey, sign_certificate
from signet.pki.request import (
    DEFAULT_USAGES,
    MAX_COMMON_NAME,
    LeafRequest,
    check_attribute,
    freeze_lists,
)
from signet.pki.spiffe import parse_spiffe_id

__all__ = [
    "BACKDATE",
    "DEFAULT_USAGES",
    "LeafRequest",
    "build_intermediate_ca",
    "build_leaf",
    "build_self_signed_ca",
    "ca_key_usage",
    "freeze_lists",
    "leaf_validity",
    "random_serial_number",
]

BACKDATE = datetime.timedelta(minutes=1)
"""How far notBefore is set before "now" to tolerate clock skew between peers."""


def random_serial_number() -> int:
    """A positive, non-zero 128-bit random serial number."""
    while True:
        serial = secrets.randbits(128)
        if serial:
            return serial


def build_leaf(
    request: LeafRequest,
    subject_public_key: PublicKeyTypes,
    issuer: x509.Certificate,
    ca_key: KmsPrivateKey,
    *,
    now: datetime.datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Issue an end-entity certificate for ``subject_public_key``, signed by ``ca_key``.

    ``issuer`` is the CA certificate for ``ca_key`` (self-signed or from a user chain);
    its subject becomes the issuer name and its SKI the AKI. Calls ``ca_key.sign`` once.
    A caller that must say what it signs before the signature exists (the audit record
    is written the moment KMS answers) picks ``serial`` and ``now`` itself; see
    `leaf_validity`.
    """
    now = _utc(now)
    public_key = validate_public_key(subject_public_key)
    key_usage = request.key_usage(public_key)
    _check_issuer(issuer, ca_key, now, issues_ca=False)
    if public_key == ca_key.public_key():
        raise ValueError("the leaf key must not be the CA's own key")
    not_before, not_after = leaf_validity(issuer, now, request.duration)

    subject = request.subject()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial or random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer), critical=False)
    )
    ekus = request.extended_key_usages()
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    general_names = request.general_names()
    if general_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general_names), critical=len(subject) == 0
        )
    return sign_certificate(builder, ca_key)


def build_self_signed_ca(
    ca_key: KmsPrivateKey,
    subject: str | x509.Name,
    duration: datetime.timedelta,
    *,
    now: datetime.datetime | None = None,
    path_length: int | None = 0,
    trust_domain: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Bootstrap a root CA certificate for a KMS key (the key signs its own certificate).

    ``subject`` is a common name or a full DN. ``path_length`` 0 (the default) means the
    CA signs only leaves; pass ``None`` or more to let it sign intermediates.
    ``trust_domain`` adds the trust domain's SPIFFE ID (``spiffe://<td>``, no path) as
    the URI SAN that X509-SVID section 3.2 recommends for signing certificates.
    """
    now = _utc(now)
    if duration <= datetime.timedelta(0):
        raise ValueError("duration must be positive")
    name = _ca_name(subject)
    builder = _ca_builder(
        ca_key.public_key(), name, name, now - BACKDATE, now + duration, path_length, serial
    )
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
    )
    builder = _add_trust_domain(builder, trust_domain)
    return sign_certificate(builder, ca_key)


def build_intermediate_ca(
    subject_public_key: PublicKeyTypes,
    subject: str | x509.Name,
    duration: datetime.timedelta,
    issuer: x509.Certificate,
    issuer_key: KmsPrivateKey,
    *,
    now: datetime.datetime | None = None,
    path_length: int | None = 0,
    trust_domain: str | None = None,
) -> x509.Certificate:
    """Certify another CA key (e.g. a second KMS key) under ``issuer``.

    Validity is clamped to the issuer's like a leaf's, and ``path_length`` must fit
    under the issuer's own pathLenConstraint.
    """
    now = _utc(now)
    _check_issuer(issuer, issuer_key, now, issues_ca=True)
    issuer_path = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    if issuer_path.path_length is not None and (
        path_length is None or path_length >= issuer_path.path_length
    ):
        raise ValueError(
            f"intermediate path length {path_length} must be below the issuer's "
            f"{issuer_path.path_length}"
        )
    not_before, not_after = leaf_validity(issuer, now, duration)
    public_key = validate_public_key(subject_public_key)
    builder = _ca_builder(
        public_key, _ca_name(subject), issuer.subject, not_before, not_after, path_length
    )
    builder = builder.add_extension(_authority_key_identifier(issuer), critical=False)
    builder = _add_trust_domain(builder, trust_domain)
    return sign_certificate(builder, issuer_key)


def ca_key_usage(*, digital_signature: bool = False) -> x509.KeyUsage:
    """What a CA's key is for: signing certificates and CRLs (and, for CAs that also sign
    other things, such as the throwaway ones of development clusters, digital signatures).
    One definition so that every CA this project makes says the same."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_builder(
    public_key: LeafPublicKey,
    subject: x509.Name,
    issuer_name: x509.Name,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    path_length: int | None,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    if path_length is not None and path_length < 0:
        raise ValueError("path length must not be negative")
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial or random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _add_trust_domain(
    builder: x509.CertificateBuilder, trust_domain: str | None
) -> x509.CertificateBuilder:
    if trust_domain is None:
        return builder
    spiffe_id = parse_spiffe_id(f"spiffe://{trust_domain}", require_path=False)
    return builder.add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
        critical=False,
    )


def _ca_name(subject: str | x509.Name) -> x509.Name:
    if isinstance(subject, x509.Name):
        if len(subject) == 0:
            raise ValueError("CA subject must not be empty")
        return subject
    check_attribute("CA common name", subject, MAX_COMMON_NAME)
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])


def _check_issuer(
    issuer: x509.Certificate, ca_key: KmsPrivateKey, now: datetime.datetime, *, issues_ca: bool
) -> None:
    if issuer.public_key() != ca_key.public_key():
        raise ValueError(
            f"issuer certificate {issuer.subject.rfc4514_string()!r} is not for the KMS key "
            f"version {ca_key.algorithm.name} that signs"
        )
    constraints = extension(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise ValueError(f"issuer {issuer.subject.rfc4514_string()!r} is not a CA certificate")
    if issues_ca and constraints.path_length == 0:
        raise ValueError(
            f"issuer {issuer.subject.rfc4514_string()!r} has path length 0 and cannot sign CAs"
        )
    check_validity(issuer, now, f"issuer {issuer.subject.rfc4514_string()!r}")


def leaf_validity(
    issuer: x509.Certificate, now: datetime.datetime, duration: datetime.timedelta
) -> tuple[datetime.datetime, datetime.datetime]:
    """notBefore and notAfter of a certificate issued at ``now``: backdated a little for
    clock skew, and never outside the issuer's own validity."""
    if duration <= datetime.timedelta(0):
        raise ValueError("duration must be positive")
    not_before = max(now - BACKDATE, issuer.not_valid_before_utc)
    not_after = min(now + duration, issuer.not_valid_after_utc)
    return not_before, not_after


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _utc(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(datetime.UTC)

"""Reading a PKCS#10 request into what Signet's policy judges.

A Kubernetes CertificateSigningRequest and a cert-manager CertificateRequest both carry
the requester's PKCS#10 in ``spec.request``, and both are judged as the
`signet.api.certificate.X509Spec` a Certificate would be. Reading it happens here once, so
the two paths cannot disagree on which subject attributes or name types a request may
carry, on what proves possession of the key, or on how a refusal names the request's
fields. Pure; the callers decide what the names may be.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from signet.api.certificate import (
    EXTENDED_USAGES,
    SPIFFE_USAGES_RULE,
    PrivateKeySpec,
    Subject,
    X509Spec,
)
from signet.decisions.gates import Refusal
from signet.decisions.leaf import leaf_request
from signet.pki import keys
from signet.pki.request import LeafRequest
from signet.reasons import Reason

SUBJECT_ATTRIBUTES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
}
"""The subject attributes a Certificate may carry; a request for any other is refused
rather than silently dropped, so the certificate never says less than the requester
believes without telling it."""


@dataclass(frozen=True)
class Requested:
    """What a verified PKCS#10 asks for, in request order."""

    public_key: keys.LeafPublicKey
    subject: dict[str, list[str]]
    """Subject attributes by short name (`SUBJECT_ATTRIBUTES`)."""
    dns_names: list[str]
    ip_addresses: list[str]
    uris: list[str]
    emails: list[str]

    @property
    def common_name(self) -> str | None:
        return self.subject.get("CN", [None])[0]

    def names(self) -> list[str]:
        """The names a message shows for the certificate, the CN when it has no other."""
        return [*self.dns_names, *self.ip_addresses, *self.uris, *self.emails] or [
            f"CN={self.common_name}"
        ]

    def x509_spec(
        self, *, uris: Iterable[str], usages: tuple[str, ...], spiffe_service_account: str | None
    ) -> X509Spec:
        """The Certificate spec the policy judges; ``uris`` are those left once the caller
        took out the SPIFFE ID it grants through ``spiffe_service_account``."""
        subject = self.subject
        return X509Spec(
            common_name=self.common_name,
            subject=Subject(
                organizations=tuple(subject.get("O", ())),
                organizational_units=tuple(subject.get("OU", ())),
                countries=tuple(subject.get("C", ())),
                localities=tuple(subject.get("L", ())),
                provinces=tuple(subject.get("ST", ())),
            ),
            dns_names=tuple(self.dns_names),
            ip_addresses=tuple(self.ip_addresses),
            uris=tuple(uris),
            email_addresses=tuple(self.emails),
            usages=usages,
            spiffe_service_account=spiffe_service_account,
        )


def read(pem: bytes) -> Requested | Refusal:
    """The request in ``spec.request``, once its signature proves the requester holds the
    key; a refusal naming what is wrong otherwise."""
    try:
        csr = x509.load_pem_x509_csr(pem)
        signature_valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return Refusal(
            Reason.INVALID_REQUEST,
            f"spec.request is not a readable PEM PKCS#10 request: {str(error)[:200]}",
        )
    if not signature_valid:
        return Refusal(
            Reason.INVALID_REQUEST,
            "spec.request: the PKCS#10 signature does not verify with the request's own "
            "public key (the requester must prove it holds the private key)",
        )
    try:
        public_key = keys.validate_public_key(csr.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return Refusal(Reason.UNSUPPORTED_KEY_ALGORITHM, f"spec.request public key: {error}")
    try:
        subject = _subject(csr.subject)
        dns, ips, uris, emails = _alt_names(csr)
    except ValueError as error:
        return Refusal(Reason.INVALID_REQUEST, str(error))
    return Requested(public_key, subject, dns, ips, uris, emails)


def svid_alone(svid: str | None, uris: Sequence[str]) -> Refusal | None:
    """An X509-SVID carries its SPIFFE ID as its only URI."""
    if svid is None or len(uris) <= 1:
        return None
    return Refusal(
        Reason.INVALID_REQUEST,
        f"spec.request asks for the SPIFFE ID {svid!r} and other URIs: an X509-SVID "
        "carries exactly one URI SAN",
    )


def svid_usages(svid: str | None, usages: Sequence[str]) -> Refusal | None:
    """An X509-SVID with extended key usages serves both ends of mutual TLS, as a
    Certificate's must."""
    ekus = [u for u in usages if u in EXTENDED_USAGES]
    if svid is None or not ekus or {"server auth", "client auth"} <= set(ekus):
        return None
    return Refusal(Reason.INVALID_REQUEST, f"spec.usages {list(usages)}: {SPIFFE_USAGES_RULE}")


def leaf(
    spec: X509Spec,
    public_key: keys.LeafPublicKey,
    *,
    spiffe_id: str | None,
    duration: datetime.timedelta,
) -> LeafRequest | Refusal:
    """The leaf the checked spec asks for; usages the key cannot serve are refused here,
    before KMS is asked."""
    try:
        request = leaf_request(spec, spiffe_id=spiffe_id, duration=duration)
        request.key_usage(public_key)
    except ValueError as error:
        return Refusal(Reason.INVALID_REQUEST, f"spec.request and spec.usages: {error}")
    return request


def key_spec(public_key: keys.LeafPublicKey) -> PrivateKeySpec:
    """The requester's key as the policy's allowedKeyAlgorithms names it."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return PrivateKeySpec("RSA", public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return PrivateKeySpec("ECDSA", public_key.key_size)
    return PrivateKeySpec("Ed25519", None)


def in_request_terms(message: str, fields: Iterable[tuple[str, str]]) -> str:
    """A policy message (which speaks of a Certificate's fields) in the request's terms;
    ``fields`` pairs each Certificate field with how the request names the same value."""
    for certificate_field, request_field in fields:
        message = message.replace(certificate_field, request_field)
    return message


CERTIFICATE_FIELDS = (
    ("spec.x509.dnsNames", "spec.request dNSName"),
    ("spec.x509.ipAddresses", "spec.request iPAddress"),
    ("spec.x509.uris", "spec.request URI"),
    ("spec.x509.emailAddresses", "spec.request rfc822Name"),
    ("spec.x509.commonName", "spec.request subject CN"),
    ("spec.privateKey.algorithm", "spec.request public key algorithm"),
)
"""How a Certificate's name fields read in a PKCS#10 request (the SPIFFE ID is each
path's own)."""


def _subject(name: x509.Name) -> dict[str, list[str]]:
    """The subject's attributes by short name; ValueError naming any other attribute."""
    found: dict[str, list[str]] = {}
    for attribute in name:
        short = SUBJECT_ATTRIBUTES.get(attribute.oid)
        if short is None or not isinstance(attribute.value, str):
            label = attribute.rfc4514_string().partition("=")[0]
            raise ValueError(
                f"spec.request subject attribute {label} is not supported: Signet issues "
                f"only {', '.join(SUBJECT_ATTRIBUTES.values())}"
            )
        found.setdefault(short, []).append(attribute.value)
    if len(found.get("CN", [])) > 1:
        raise ValueError("spec.request subject has more than one CN; a certificate has one")
    return found


def _alt_names(
    csr: x509.CertificateSigningRequest,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """DNS names, IP addresses, URIs and email addresses asked for, in request order."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], [], [], []
    except ValueError as error:
        raise ValueError(f"spec.request has unreadable extensions: {error}") from None
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    emails: list[str] = []
    for general_name in extension.value:
        if isinstance(general_name, x509.DNSName):
            dns.append(general_name.value)
        elif isinstance(general_name, x509.IPAddress):
            ips.append(str(general_name.value))
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            uris.append(general_name.value)
        elif isinstance(general_name, x509.RFC822Name):
            emails.append(general_name.value)
        else:
            raise ValueError(
                f"spec.request subjectAltName of type {type(general_name).__name__} is not "
                "supported: Signet issues DNS names, IP addresses, URIs and email addresses"
            )
    return dns, ips, uris, emails

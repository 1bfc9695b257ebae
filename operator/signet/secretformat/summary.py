"""Is this Secret an intact identity, and whose?

The Secret watch hands every labelled Secret to `summarize`, and only the summary is kept:
serial, validity, fingerprints and the problem found, never the key. That is what lets the
operator restart over 10,000 Certificates without a single GET or signature, and what keeps
private keys out of memory between events.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from signet.pki import keys
from signet.reasons import Reason
from signet.secretformat import layout


@dataclass(frozen=True, slots=True)
class SecretSummary:
    """What the controller needs to know about one Secret, without its key material.

    One is kept per Secret for the operator's life, so it is slotted and its repeated
    strings (label and annotation names, issuer names, key versions) are interned.
    """

    namespace: str
    name: str
    resource_version: str
    secret_type: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_uid: str | None = None
    """UID of the Certificate named as controller in ownerReferences, if any."""
    problem: Reason | None = None
    """Named reason the content is unusable (MissingData, InvalidCertificate, ...)."""
    problem_message: str = ""
    serial: str | None = None
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    public_key_fingerprint: str | None = None
    ca_key_id: str | None = None
    """Identifies the key that signed the certificate: X.509 AKI (hex), or the SSH CA's
    ``SHA256:`` fingerprint; compared with the issuer's current key."""
    output_keys: tuple[str, ...] = ()
    """Which of the optional outputs (keystores, additionalOutputFormats) the data holds:
    their names only, in `layout.OUTPUT_KEYS` order."""

    @property
    def managed(self) -> bool:
        return layout.CERTIFICATE_NAME in self.annotations and (
            self.labels.get(layout.MANAGED_BY_LABEL) == layout.MANAGED_BY
        )

    @property
    def certificate_name(self) -> str | None:
        return self.annotations.get(layout.CERTIFICATE_NAME)


def _decode(data: Mapping[str, Any], key: str) -> bytes | None:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _controller_uid(metadata: Mapping[str, Any]) -> str | None:
    for ref in metadata.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == "Certificate"
            and str(ref.get("apiVersion", "")).startswith("signet.dev/")
        ):
            return str(ref.get("uid"))
    return None


_DESCRIPTIVE = frozenset(
    {
        layout.SERIAL,
        layout.NOT_BEFORE,
        layout.NOT_AFTER,
        layout.COMMON_NAME,
        layout.ALT_NAMES,
        layout.IP_SANS,
        layout.URI_SANS,
        layout.EMAIL_SANS,
        layout.SSH_PRINCIPALS,
        layout.SSH_KEY_ID,
        layout.ISSUER_GROUP,
    }
)
"""Annotations written for people and tools; the certificate itself is the source of truth
for them, so summaries (one per Secret, kept for the operator's life) leave them out."""


def summarize(secret: Mapping[str, Any], *, written_by_us: bool = False) -> SecretSummary:
    """Summarise a Secret object as returned by the API (data base64-encoded).

    ``written_by_us``: the answer to Signet's own write of a key it generated for this very
    certificate; loading the key back to prove it matches would cost a PEM parse per
    issuance and prove nothing. Every other Secret (watched, listed) is checked in full.
    """
    metadata = secret.get("metadata") or {}
    base = SecretSummary(
        namespace=sys.intern(metadata.get("namespace", "")),
        name=metadata.get("name", ""),
        resource_version=str(metadata.get("resourceVersion", "")),
        secret_type=sys.intern(secret.get("type") or "Opaque"),
        labels=_interned(metadata.get("labels") or {}, skip=frozenset()),
        annotations=_interned(metadata.get("annotations") or {}, skip=_DESCRIPTIVE),
        owner_uid=_controller_uid(metadata),
    )
    data = secret.get("data") or {}
    if any(key in data for key in layout.OUTPUT_KEYS):
        base = dataclasses.replace(
            base, output_keys=tuple(key for key in layout.OUTPUT_KEYS if data.get(key))
        )
    try:
        if base.secret_type == layout.SSH_TYPE:
            return _summarize_ssh(base, data, check_key=not written_by_us)
        return _summarize_x509(base, data, check_key=not written_by_us)
    except _Problem as problem:
        return dataclasses.replace(base, problem=problem.reason, problem_message=problem.message)


class _Problem(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _interned(mapping: Mapping[str, Any], skip: frozenset[str]) -> dict[str, str]:
    return {
        sys.intern(key): sys.intern(value)
        for key, value in mapping.items()
        if key not in skip and isinstance(value, str)
    }


def _require(data: Mapping[str, Any], secret_type: str) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for key in layout.REQUIRED_KEYS[secret_type]:
        value = _decode(data, key)
        if not value:
            raise _Problem(Reason.MISSING_DATA, f"Secret data {key!r} is missing or empty")
        values[key] = value
    return values


def _require_matching_key(
    values: Mapping[str, bytes],
    field: str,
    certificate: x509.Certificate | serialization.SSHCertificate,
    described: str,
) -> None:
    try:
        key = keys.load_private_key(values[field])
    except ValueError:
        raise _Problem(Reason.INVALID_KEY, f"{field} is not a usable private key") from None
    if not keys.private_key_matches(key, certificate):
        raise _Problem(Reason.KEY_MISMATCH, f"{field} does not match {described}")


def _summarize_x509(
    base: SecretSummary, data: Mapping[str, Any], *, check_key: bool
) -> SecretSummary:
    if base.secret_type != layout.TLS_TYPE:
        raise _Problem(
            Reason.INVALID_TYPE, f"Secret type is {base.secret_type!r}, not kubernetes.io/tls"
        )
    values = _require(data, layout.TLS_TYPE)
    try:
        chain = x509.load_pem_x509_certificates(values[layout.TLS_CERT])
        x509.load_pem_x509_certificates(values[layout.CA_CERT])
    except ValueError:
        raise _Problem(
            Reason.INVALID_CERTIFICATE, "tls.crt or ca.crt is not a PEM certificate"
        ) from None
    leaf = chain[0]
    if check_key:
        _require_matching_key(values, layout.TLS_KEY, leaf, "the certificate in tls.crt")
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ca_key_id = aki.key_identifier.hex() if aki.key_identifier else None
    except x509.ExtensionNotFound:
        ca_key_id = None
    return dataclasses.replace(
        base,
        serial=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        public_key_fingerprint=keys.spki_fingerprint(leaf.public_key()),
        ca_key_id=ca_key_id,
    )


def _summarize_ssh(
    base: SecretSummary, data: Mapping[str, Any], *, check_key: bool
) -> SecretSummary:
    values = _require(data, layout.SSH_TYPE)
    try:
        certificate = serialization.load_ssh_public_identity(values[layout.SSH_CERTIFICATE])
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _Problem(
            Reason.INVALID_CERTIFICATE, "ssh-certificate is not an OpenSSH certificate"
        ) from None
    if not isinstance(certificate, serialization.SSHCertificate):
        raise _Problem(
            Reason.INVALID_CERTIFICATE, "ssh-certificate holds a plain key, not a certificate"
        )
    if check_key:
        _require_matching_key(values, layout.SSH_PRIVATE_KEY, certificate, "ssh-certificate")
    utc = datetime.UTC
    return dataclasses.replace(
        base,
        serial=str(certificate.serial),
        not_before=datetime.datetime.fromtimestamp(certificate.valid_after, utc),
        not_after=datetime.datetime.fromtimestamp(certificate.valid_before, utc),
        public_key_fingerprint=keys.openssh_fingerprint(certificate.public_key()),
        ca_key_id=keys.openssh_fingerprint(certificate.signature_key()),
    )

"""OpenSSH user and host certificates signed by a KMS-held CA key.

ECDSA (P-256, P-384) and Ed25519 CA keys go through ``SSHCertificateBuilder`` with a
KMS adapter; RSA CA keys go through :mod:`signet.pki.ssh_rsa` because the builder insists
on SHA-512 for RSA. RSA-PSS KMS keys cannot sign SSH certificates at all (OpenSSH has no
PSS signature type) and are refused.

Everything that ends up in a certificate is validated first, with messages that name the
offending value. Principals in particular are matched by sshd against user names,
``AuthorizedPrincipalsFile`` lines and host names, where a comma or whitespace changes
the meaning, so such characters are refused rather than passed through.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
)

from signet.kms.algorithms import Algorithm, KeyType, Padding, get_algorithm
from signet.pki.keys import validate_public_key
from signet.pki.kmskey import KmsPrivateKey, KmsRsaPrivateKey
from signet.pki.ssh_rsa import CertificateFields, sign_with_rsa_ca
from signet.pki.x509 import freeze_lists

__all__ = [
    "BACKDATE",
    "DEFAULT_USER_EXTENSIONS",
    "EXTENSIONS",
    "SshCertRequest",
    "authorized_keys_line",
    "build_ssh_certificate",
    "check_ssh_ca_algorithm",
    "check_ssh_ca_key",
    "known_hosts_line",
    "public_key_line",
]

BACKDATE = datetime.timedelta(minutes=1)
"""How far ``valid after`` is set before "now" to tolerate clock skew."""

EXTENSIONS = (
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)
"""Extensions a user certificate may carry (PROTOCOL.certkeys)."""

DEFAULT_USER_EXTENSIONS = (
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)
"""What ``ssh-keygen -s`` grants a user certificate unless told otherwise."""

_MAX_PRINCIPALS = 256  # OpenSSH's SSHKEY_CERT_MAX_PRINCIPALS
_MAX_PRINCIPAL = 255
_MAX_KEY_ID = 255
_MAX_SOURCE_ADDRESSES = 64


@dataclass(frozen=True)
class SshCertRequest:
    """What an OpenSSH certificate should say; validated on construction.

    ``extensions`` of ``None`` means the OpenSSH defaults for a user certificate
    (:data:`DEFAULT_USER_EXTENSIONS`) and none for a host certificate. Host certificates
    cannot have critical options or extensions: OpenSSH defines none for them.
    """

    cert_type: Literal["user", "host"]
    key_id: str
    principals: tuple[str, ...]
    duration: datetime.timedelta
    force_command: str | None = None
    source_addresses: tuple[str, ...] = ()
    extensions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        freeze_lists(self)
        self._validate()

    def _validate(self) -> None:
        if self.cert_type not in ("user", "host"):
            raise ValueError(
                f"SSH certificate type must be 'user' or 'host', not {self.cert_type!r}"
            )
        _check_key_id(self.key_id)
        _check_principals(self.principals)
        if self.duration <= datetime.timedelta(0):
            raise ValueError("duration must be positive")
        if self.cert_type == "host":
            if self.force_command is not None or self.source_addresses:
                raise ValueError("host certificates cannot have critical options")
            if self.extensions:
                raise ValueError("host certificates cannot have extensions")
        if self.force_command is not None:
            _check_force_command(self.force_command)
        _check_source_addresses(self.source_addresses)
        seen: set[str] = set()
        for extension in self.extensions or ():
            if extension not in EXTENSIONS:
                raise ValueError(
                    f"unknown SSH certificate extension {extension!r}; "
                    f"use one of {', '.join(EXTENSIONS)}"
                )
            if extension in seen:
                raise ValueError(f"SSH certificate extension {extension!r} is listed twice")
            seen.add(extension)

    def effective_extensions(self) -> tuple[str, ...]:
        """The extensions that go into the certificate (defaults applied)."""
        if self.extensions is not None:
            return self.extensions
        return DEFAULT_USER_EXTENSIONS if self.cert_type == "user" else ()

    def critical_options(self) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs; ``source-address`` is the comma-joined CIDR list."""
        options: list[tuple[bytes, bytes]] = []
        if self.force_command is not None:
            options.append((b"force-command", self.force_command.encode()))
        if self.source_addresses:
            options.append((b"source-address", ",".join(self.source_addresses).encode()))
        return options


def check_ssh_ca_algorithm(algorithm: str | Algorithm) -> None:
    """Raise ``ValueError`` if keys of this KMS algorithm cannot sign OpenSSH certificates.

    Takes the algorithm name from ``KmsPublicKey.algorithm`` so the operator can reject an
    SSH issuer at configuration time rather than at the first certificate.
    """
    alg = algorithm if isinstance(algorithm, Algorithm) else get_algorithm(algorithm)
    if alg.key_type is KeyType.RSA and alg.padding is Padding.PSS:
        raise ValueError(
            f"{alg.name} cannot sign SSH certificates; OpenSSH only accepts RSA PKCS#1 v1.5 "
            "signatures (rsa-sha2-256, rsa-sha2-512)"
        )


def check_ssh_ca_key(ca_key: KmsPrivateKey) -> None:
    """:func:`check_ssh_ca_algorithm` for an adapter's algorithm."""
    check_ssh_ca_algorithm(ca_key.algorithm)


def validity(
    now: datetime.datetime, duration: datetime.timedelta
) -> tuple[datetime.datetime, datetime.datetime]:
    """valid_after and valid_before of a certificate made at ``now``, in the whole seconds
    the certificate carries: backdated by :data:`BACKDATE` for clock skew."""
    utc = datetime.UTC
    return (
        datetime.datetime.fromtimestamp(int((now - BACKDATE).timestamp()), utc),
        datetime.datetime.fromtimestamp(int((now + duration).timestamp()), utc),
    )


def build_ssh_certificate(
    request: SshCertRequest,
    subject_public_key: PublicKeyTypes,
    ca_key: KmsPrivateKey,
    *,
    now: datetime.datetime | None = None,
    serial: int | None = None,
) -> SSHCertificate:
    """Certify ``subject_public_key``; calls ``ca_key.sign`` exactly once.

    The serial is 64 random bits unless given; validity runs from ``now`` minus
    :data:`BACKDATE` to ``now`` plus the requested duration, in whole seconds.
    """
    check_ssh_ca_algorithm(ca_key.algorithm)
    public_key = validate_public_key(subject_public_key)
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    valid_after, valid_before = validity(now, request.duration)
    cert_fields = CertificateFields(
        serial=serial if serial is not None else secrets.randbits(64),
        cert_type=SSHCertificateType.USER
        if request.cert_type == "user"
        else SSHCertificateType.HOST,
        key_id=request.key_id.encode(),
        principals=[p.encode() for p in request.principals],
        valid_after=int(valid_after.timestamp()),
        valid_before=int(valid_before.timestamp()),
        critical_options=request.critical_options(),
        extensions=[(name.encode(), b"") for name in request.effective_extensions()],
    )
    if isinstance(ca_key, KmsRsaPrivateKey):
        return sign_with_rsa_ca(cert_fields, public_key, ca_key)
    builder = (
        SSHCertificateBuilder()
        .public_key(public_key)
        .serial(cert_fields.serial)
        .type(cert_fields.cert_type)
        .key_id(cert_fields.key_id)
        .valid_principals(list(cert_fields.principals))
        .valid_after(cert_fields.valid_after)
        .valid_before(cert_fields.valid_before)
    )
    for name, value in cert_fields.critical_options:
        builder = builder.add_critical_option(name, value)
    for name, value in cert_fields.extensions:
        builder = builder.add_extension(name, value)
    return builder.sign(ca_key)


def public_key_line(public_key: PublicKeyTypes, comment: str = "") -> str:
    """``<type> <base64> [comment]``: a ``TrustedUserCAKeys`` or ``authorized_keys`` line."""
    line = (
        validate_public_key(public_key)
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    if comment:
        _check_line_text("comment", comment)
        line += " " + comment
    return line


def authorized_keys_line(
    public_key: PublicKeyTypes, principals: Sequence[str] = (), comment: str = ""
) -> str:
    """An ``authorized_keys`` line trusting ``public_key`` as a user CA for one account.

    ``principals`` restricts which certificate principals the account accepts (the
    ``principals=`` option); empty means the account name itself.
    """
    options = "cert-authority"
    if principals:
        _check_principals(principals)
        options += f',principals="{",".join(principals)}"'
    return f"{options} {public_key_line(public_key, comment)}"


def known_hosts_line(
    public_key: PublicKeyTypes, host_patterns: Sequence[str], comment: str = ""
) -> str:
    """``@cert-authority <patterns> <key>``: trust host certificates from this CA.

    ``host_patterns`` are known_hosts patterns (``*.example.com``, ``[host]:2222``); a
    client with only this line and ``StrictHostKeyChecking yes`` accepts any host whose
    certificate from this CA names the host it connects to.
    """
    if not host_patterns:
        raise ValueError("known_hosts line needs at least one host pattern")
    for pattern in host_patterns:
        if not pattern or "," in pattern:
            raise ValueError(f"host pattern {pattern!r} must be non-empty and without commas")
        _check_line_text("host pattern", pattern, allow_space=False)
    return f"@cert-authority {','.join(host_patterns)} {public_key_line(public_key, comment)}"


def _check_principals(principals: Sequence[str]) -> None:
    if not principals:
        raise ValueError(
            "SSH certificates need at least one principal (an empty list would be valid for "
            "every user or host)"
        )
    if len(principals) > _MAX_PRINCIPALS:
        raise ValueError(f"at most {_MAX_PRINCIPALS} principals are allowed")
    seen: set[str] = set()
    for principal in principals:
        if not principal:
            raise ValueError("principal must not be empty")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in principal):
            raise ValueError(f"principal {principal!r} must not contain control characters")
        if any(ch.isspace() for ch in principal):
            raise ValueError(f"principal {principal!r} must not contain whitespace")
        if "," in principal:
            raise ValueError(f"principal {principal!r} must not contain a comma")
        if not principal.isascii():
            raise ValueError(f"principal {principal!r} must be ASCII")
        if len(principal) > _MAX_PRINCIPAL:
            raise ValueError(f"principal {principal!r} is longer than {_MAX_PRINCIPAL} characters")
        if principal in seen:
            raise ValueError(f"principal {principal!r} is listed twice")
        seen.add(principal)


def _check_key_id(key_id: str) -> None:
    # The key id is logged by sshd on every login, so it must not forge log lines.
    if not key_id:
        raise ValueError("key id must not be empty")
    if len(key_id) > _MAX_KEY_ID:
        raise ValueError(f"key id is longer than {_MAX_KEY_ID} characters")
    _check_line_text("key id", key_id)


def _check_force_command(command: str) -> None:
    if not command.strip():
        raise ValueError("force-command must not be empty")
    if "\x00" in command or "\n" in command or "\r" in command:
        raise ValueError("force-command must not contain NUL or line breaks")


def _check_source_addresses(addresses: Sequence[str]) -> None:
    if len(addresses) > _MAX_SOURCE_ADDRESSES:
        raise ValueError(f"at most {_MAX_SOURCE_ADDRESSES} source addresses are allowed")
    for address in addresses:
        if "," in address or any(ch.isspace() for ch in address):
            raise ValueError(
                f"source address {address!r} must be a single address or CIDR block; "
                "give a list instead of commas"
            )
        try:
            ipaddress.ip_network(address, strict=True)
        except ValueError:
            try:
                network = ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    f"source address {address!r} is not an IP address or CIDR block"
                ) from None
            raise ValueError(
                f"source address {address!r} has host bits set; use {str(network)!r}"
            ) from None


def _check_line_text(label: str, value: str, *, allow_space: bool = True) -> None:
    if not value.isascii() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{label} {value!r} must be printable ASCII")
    if not allow_space and " " in value:
        raise ValueError(f"{label} {value!r} must not contain spaces")

"""What a workload's X.509 certificate will say, validated before any key is used.

A `LeafRequest` is checked when it is made: names against their RFC syntax, the SPIFFE
ID's shape, usages against what the key can do, and attribute lengths against RFC 5280's
upper bounds. `signet.pki.x509` then only builds and signs what already passed.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signet.pki.keys import LeafPublicKey
from signet.pki.names import (
    validate_dns_name,
    validate_email_address,
    validate_ip_address,
    validate_uri,
)
from signet.pki.spiffe import parse_spiffe_id

DEFAULT_USAGES = ("digital signature", "key encipherment")
"""cert-manager's default ``usages``."""

_KEY_USAGES = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "data encipherment": "data_encipherment",
    "key agreement": "key_agreement",
}
_CA_ONLY_USAGES = ("cert sign", "crl sign")
_EXTENDED_USAGES = {
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "ipsec end system": ExtendedKeyUsageOID.IPSEC_IKE,
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
MAX_COMMON_NAME = 64  # ub-common-name, RFC 5280 appendix A
_MAX_ATTRIBUTE = 128
_MAX_POSTAL_CODE = 40  # ub-postal-code, X.520
_MAX_SERIAL_NUMBER = 64  # ub-serial-number, RFC 5280 appendix A
_PRINTABLE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")
"""X.680 PrintableString: the only string type RFC 5280 allows a subject serialNumber."""


def freeze_lists(request: object) -> None:
    """Store list arguments of a frozen request dataclass as tuples, so callers may pass
    lists while the request stays hashable and immutable."""
    for f in fields(request):  # type: ignore[arg-type]
        value = getattr(request, f.name)
        if isinstance(value, list):
            object.__setattr__(request, f.name, tuple(value))


@dataclass(frozen=True)
class LeafRequest:
    """What a workload certificate should say; validated on construction.

    Field names and usage strings follow cert-manager's ``Certificate`` spec so the
    operator can map its resource onto this one to one. Sequences may be passed as lists;
    they are stored as tuples.
    """

    common_name: str | None = None
    organizations: tuple[str, ...] = ()
    organizational_units: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    provinces: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    street_addresses: tuple[str, ...] = ()
    postal_codes: tuple[str, ...] = ()
    serial_number: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    spiffe_id: str | None = None
    usages: tuple[str, ...] = DEFAULT_USAGES
    duration: datetime.timedelta = field(default=datetime.timedelta(days=90))

    def __post_init__(self) -> None:
        freeze_lists(self)
        self._validate()

    def _validate(self) -> None:
        if self.duration <= datetime.timedelta(0):
            raise ValueError("duration must be positive")
        if self.common_name is not None:
            check_attribute("common name", self.common_name, MAX_COMMON_NAME)
        for label, values in (
            ("organization", self.organizations),
            ("organizational unit", self.organizational_units),
            ("province", self.provinces),
            ("locality", self.localities),
            ("street address", self.street_addresses),
        ):
            for value in values:
                check_attribute(label, value, _MAX_ATTRIBUTE)
        for code in self.postal_codes:
            check_attribute("postal code", code, _MAX_POSTAL_CODE)
        if self.serial_number is not None:
            check_attribute("subject serial number", self.serial_number, _MAX_SERIAL_NUMBER)
            if not _PRINTABLE.match(self.serial_number):
                raise ValueError(
                    f"subject serial number {self.serial_number!r} must be a PrintableString "
                    "(letters, digits, space and '()+,-./:=?)"
                )
        for country in self.countries:
            if len(country) != 2 or not (country.isascii() and country.isalpha()):
                raise ValueError(f"country {country!r} must be a two-letter ISO 3166 code")
        _no_duplicates("DNS name", self.dns_names)
        _no_duplicates("IP address", self.ip_addresses)
        _no_duplicates("URI", self.uris)
        _no_duplicates("email address", self.email_addresses)
        for name in self.dns_names:
            validate_dns_name(name)
        ips = [validate_ip_address(ip) for ip in self.ip_addresses]
        _no_duplicates("IP address", [str(ip) for ip in ips])
        for uri in self.uris:
            validate_uri(uri)
        for email in self.email_addresses:
            validate_email_address(email)
        if self.spiffe_id is not None:
            parse_spiffe_id(self.spiffe_id)
            if self.uris:
                raise ValueError(
                    "a SPIFFE X509-SVID carries exactly one URI SAN; uris must be empty "
                    "when spiffe_id is set"
                )
        if not self.common_name and not self._has_san():
            raise ValueError(
                "certificate needs a common name or at least one DNS name, IP address, "
                "URI, email address or SPIFFE ID"
            )
        _no_duplicates("usage", self.usages)
        ekus = []
        for usage in self.usages:
            if usage in _CA_ONLY_USAGES:
                raise ValueError(f"usage {usage!r} is only for CA certificates")
            if usage not in _KEY_USAGES and usage not in _EXTENDED_USAGES:
                raise ValueError(f"unknown or unsupported usage {usage!r}")
            if usage in _EXTENDED_USAGES:
                ekus.append(usage)
        if self.spiffe_id is not None and ekus and not {"server auth", "client auth"} <= set(ekus):
            raise ValueError(
                "a SPIFFE X509-SVID with extended key usages must include both "
                "'server auth' and 'client auth'"
            )

    def _has_san(self) -> bool:
        return bool(
            self.dns_names
            or self.ip_addresses
            or self.uris
            or self.email_addresses
            or self.spiffe_id
        )

    def subject(self) -> x509.Name:
        """The subject DN in the order cert-manager's certificates have (Go's pkix.Name):
        C, ST, L, street, postalCode, O, OU, CN, serialNumber (may be empty)."""
        attrs: list[x509.NameAttribute[str]] = []
        for oid, values in (
            (NameOID.COUNTRY_NAME, self.countries),
            (NameOID.STATE_OR_PROVINCE_NAME, self.provinces),
            (NameOID.LOCALITY_NAME, self.localities),
            (NameOID.STREET_ADDRESS, self.street_addresses),
            (NameOID.POSTAL_CODE, self.postal_codes),
            (NameOID.ORGANIZATION_NAME, self.organizations),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, self.organizational_units),
        ):
            attrs.extend(x509.NameAttribute(oid, v) for v in values)
        if self.common_name:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name))
        if self.serial_number:
            attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, self.serial_number))
        return x509.Name(attrs)

    def general_names(self) -> list[x509.GeneralName]:
        """SAN entries: DNS names, IP addresses, the SPIFFE ID or URIs, email addresses."""
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in self.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in self.ip_addresses]
        if self.spiffe_id is not None:
            names.append(x509.UniformResourceIdentifier(self.spiffe_id))
        names += [x509.UniformResourceIdentifier(u) for u in self.uris]
        names += [x509.RFC822Name(e) for e in self.email_addresses]
        return names

    def key_usage(self, public_key: LeafPublicKey) -> x509.KeyUsage:
        """keyUsage for ``public_key``'s type, following the rules in the module docstring."""
        wanted = {"digital_signature"}
        wanted.update(_KEY_USAGES[u] for u in self.usages if u in _KEY_USAGES)
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        if not is_rsa:
            wanted.discard("key_encipherment")
            if "data_encipherment" in wanted:
                raise ValueError("usage 'data encipherment' needs an RSA key")
        if "key_agreement" in wanted and not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError("usage 'key agreement' needs an ECDSA key")
        flags = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
            ),
            False,
        )
        flags.update(dict.fromkeys(wanted, True))
        return x509.KeyUsage(
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
            **flags,
        )

    def extended_key_usages(self) -> list[x509.ObjectIdentifier]:
        """EKU OIDs in request order, without duplicates (``s/mime`` = email protection)."""
        oids: list[x509.ObjectIdentifier] = []
        for usage in self.usages:
            oid = _EXTENDED_USAGES.get(usage)
            if oid is not None and oid not in oids:
                oids.append(oid)
        if self.spiffe_id is not None and not oids:
            oids = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return oids


def check_attribute(label: str, value: str, limit: int) -> None:
    if not value:
        raise ValueError(f"{label} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{label} {value!r} is longer than {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{label} {value!r} must not contain control characters")


def _no_duplicates(label: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{label} {value!r} is listed twice")
        seen.add(value)

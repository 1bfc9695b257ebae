"""Validation of the names that go into X.509 subject alternative names.

Requests come from Kubernetes objects written by people, so every check raises a
``ValueError`` whose message names the offending value and the rule it breaks; the
operator surfaces those messages verbatim in the resource's status. Names are validated
strictly rather than normalized: silently lowercasing or trimming a name would issue a
certificate for something other than what was asked for.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "validate_dns_name",
    "validate_email_address",
    "validate_ip_address",
    "validate_uri",
]

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_DNS_NAME = 253
_MAX_LABEL = 63
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def validate_dns_name(name: str, *, allow_wildcard: bool = True) -> str:
    """Check an RFC 1123 host name as used in a dNSName SAN and return it unchanged.

    Rules: lowercase ASCII letters, digits and hyphens; labels of 1-63 characters that
    neither start nor end with a hyphen; at most 253 characters; no trailing dot.
    Internationalized names must be given in their A-label (``xn--``) form. A wildcard is
    only the whole leftmost label (``*.example.com``) and needs at least two labels after
    it, as browsers refuse anything broader.
    """
    if not name:
        raise ValueError("DNS name must not be empty")
    if len(name) > _MAX_DNS_NAME:
        raise ValueError(f"DNS name {name!r} is longer than {_MAX_DNS_NAME} characters")
    if name.endswith("."):
        raise ValueError(f"DNS name {name!r} must not end with a dot")
    if name != name.lower():
        raise ValueError(f"DNS name {name!r} must be lowercase")
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            raise ValueError(f"DNS name {name!r} must not be a wildcard here")
        if len(labels) < 3:
            raise ValueError(f"wildcard DNS name {name!r} needs at least two labels after '*'")
        labels = labels[1:]
    for label in labels:
        if "*" in label:
            raise ValueError(
                f"DNS name {name!r} has a wildcard that is not the whole leftmost label"
            )
        if not label:
            raise ValueError(f"DNS name {name!r} has an empty label")
        if len(label) > _MAX_LABEL:
            raise ValueError(f"DNS name {name!r} has a label longer than {_MAX_LABEL} characters")
        if not label.isascii():
            raise ValueError(
                f"DNS name {name!r} has non-ASCII label {label!r}; use the IDNA A-label (xn--) form"
            )
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"DNS name {name!r} has invalid label {label!r}; labels are a-z, 0-9 and '-', "
                "and do not start or end with '-'"
            )
    if labels[-1].isdigit():
        raise ValueError(f"DNS name {name!r} looks like an IP address; list it as an IP address")
    return name


def validate_ip_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IPv4 or IPv6 address for an iPAddress SAN.

    Zone indices (``fe80::1%eth0``) are refused: they are host-local and an iPAddress SAN
    cannot carry them. Python's parser already refuses leading zeros (``010.0.0.1``),
    which other parsers read as octal.
    """
    if "%" in address:
        raise ValueError(f"IP address {address!r} must not have a zone index")
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not a valid IPv4 or IPv6 address") from None


def validate_email_address(address: str) -> str:
    """Check an rfc822Name SAN: ``local@domain`` in ASCII, returned unchanged.

    The local part is a dot-atom (RFC 5322 without quoted strings); the domain follows
    :func:`validate_dns_name` without wildcards. Internationalized mailboxes would need
    the SmtpUTF8Mailbox otherName and are refused.
    """
    if address.count("@") != 1:
        raise ValueError(f"email address {address!r} must contain exactly one '@'")
    local, domain = address.split("@")
    if not local:
        raise ValueError(f"email address {address!r} has an empty local part")
    if len(local) > 64:
        raise ValueError(f"email address {address!r} has a local part longer than 64 characters")
    if not local.isascii() or not _EMAIL_LOCAL.fullmatch(local):
        raise ValueError(f"email address {address!r} has invalid characters in its local part")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(f"email address {address!r} has misplaced dots in its local part")
    try:
        validate_dns_name(domain, allow_wildcard=False)
    except ValueError as exc:
        raise ValueError(f"email address {address!r} has an invalid domain: {exc}") from None
    return address


def validate_uri(uri: str) -> str:
    """Check a uniformResourceIdentifier SAN: an absolute ASCII URI without spaces.

    Only syntax that a verifier could misread is policed (missing scheme, whitespace,
    control or non-ASCII characters); the scheme-specific part is the requester's business.
    ``spiffe:`` URIs belong in the SPIFFE ID field, which has its own stricter rules.
    """
    if not uri.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
        raise ValueError(f"URI {uri!r} must be ASCII without whitespace or control characters")
    scheme, sep, rest = uri.partition(":")
    if not sep or not _URI_SCHEME.fullmatch(scheme) or not rest:
        raise ValueError(f"URI {uri!r} must be absolute (scheme:rest)")
    if scheme.lower() == "spiffe":
        raise ValueError(f"URI {uri!r} is a SPIFFE ID; set it as the SPIFFE ID instead")
    return uri

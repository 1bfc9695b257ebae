"""SPIFFE IDs, validated as strictly as the SPIFFE specification allows.

A SPIFFE ID is ``spiffe://<trust domain><path>``. Verifiers (go-spiffe, java-spiffe,
Envoy) reject IDs that do not follow the character rules below, so an ID that passes
here but fails there would produce a certificate nobody accepts; an ID that passes there
but is normalized differently by two verifiers would be worse. Hence no normalization:
the ID is accepted byte for byte or refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SpiffeId", "parse_spiffe_id"]

_PREFIX = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_ID = 2048
_MAX_TRUST_DOMAIN = 255


@dataclass(frozen=True)
class SpiffeId:
    """A parsed SPIFFE ID; ``path`` is empty or starts with ``/``."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"{_PREFIX}{self.trust_domain}{self.path}"


def parse_spiffe_id(value: str, *, require_path: bool = True) -> SpiffeId:
    """Parse and validate ``value``; ``require_path`` is the X509-SVID leaf rule.

    Trust domain: ``[a-z0-9._-]``, 1-255 characters, no port or user info. Path: ``/``
    separated segments of ``[A-Za-z0-9._-]``, none empty, ``.`` or ``..``, no trailing
    slash. No query, fragment or percent-encoding. At most 2048 bytes in all. Leaf
    certificates need a non-empty path (X509-SVID section 3.1); a trust domain's own ID
    (``spiffe://example.org``) has none.
    """
    if len(value) > _MAX_ID:
        raise ValueError(f"SPIFFE ID is longer than {_MAX_ID} bytes")
    if not value.startswith(_PREFIX):
        raise ValueError(f"SPIFFE ID {value!r} must start with 'spiffe://' (lowercase)")
    rest = value[len(_PREFIX) :]
    for char, what in (("?", "a query"), ("#", "a fragment"), ("%", "percent-encoding")):
        if char in rest:
            raise ValueError(f"SPIFFE ID {value!r} must not contain {what}")
    trust_domain, slash, path_rest = rest.partition("/")
    path = slash + path_rest
    if not trust_domain:
        raise ValueError(f"SPIFFE ID {value!r} has an empty trust domain")
    if ":" in trust_domain or "@" in trust_domain:
        raise ValueError(f"SPIFFE ID {value!r} must not have a port or user info")
    if len(trust_domain) > _MAX_TRUST_DOMAIN:
        raise ValueError(
            f"SPIFFE ID {value!r} has a trust domain longer than {_MAX_TRUST_DOMAIN} characters"
        )
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(
            f"SPIFFE ID {value!r} has invalid trust domain {trust_domain!r}; "
            "use lowercase letters, digits, '.', '-' and '_'"
        )
    if path:
        for segment in path[1:].split("/"):
            if not segment:
                raise ValueError(
                    f"SPIFFE ID {value!r} has an empty path segment (or a trailing '/')"
                )
            if segment in (".", ".."):
                raise ValueError(f"SPIFFE ID {value!r} must not have '.' or '..' path segments")
            if not _SEGMENT.fullmatch(segment):
                raise ValueError(
                    f"SPIFFE ID {value!r} has invalid path segment {segment!r}; "
                    "use letters, digits, '.', '-' and '_'"
                )
    elif require_path:
        raise ValueError(
            f"SPIFFE ID {value!r} has no path; a workload certificate needs one "
            "(e.g. spiffe://example.org/ns/default/sa/web)"
        )
    return SpiffeId(trust_domain, path)

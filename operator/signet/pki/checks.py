"""Reading and checking certificates that already exist (a configured CA chain, the issuer
a certificate is signed under): shared by chain validation and issuance so that both read
an extension and judge a validity window the same way, in the same words.
"""

from __future__ import annotations

import datetime
from typing import TypeVar

from cryptography import x509

E = TypeVar("E", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[E]) -> E | None:
    """The certificate's extension of this kind, or None when it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def check_validity(cert: x509.Certificate, now: datetime.datetime, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` (say, ``certificate 'CN=x'``) unless ``now`` is
    inside the certificate's validity window."""
    if now < cert.not_valid_before_utc:
        raise ValueError(f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}")
    if now >= cert.not_valid_after_utc:
        raise ValueError(f"{what} expired at {cert.not_valid_after_utc.isoformat()}")

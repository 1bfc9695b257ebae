"""Which signer an issuer's key gets: Cloud KMS or a PKCS#11 token, behind one contract.

Callers (the issuer controller, benchmarks, the conformance suite) ask for a signer by
the issuer's key identity and never branch on the backend again; everything after this
point (the signature ledger, the audit log, certificate construction) sees a
:class:`~signet.kms.signer.Signer`.

The PIN of a PKCS#11 token is read only when a login needs it, through a ``PinSource``:
the controller passes one that reads the Issuer's PIN Secret; a ``pinFile`` is read here.
A PIN never appears in an error message (only where it was looked for).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from signet.api.pkcs11uri import PinSecretRef, Pkcs11Key
from signet.kms.cloudkms import CloudKmsSigner, Observer, RetryPolicy
from signet.kms.errors import KmsPinNotFound
from signet.kms.limiter import SignLimiter
from signet.kms.signer import PinSource, Signer

__all__ = ["PinSource", "file_pin_source", "open_signer", "pin_from_secret"]


def open_signer(
    key_version: str,
    pkcs11: Pkcs11Key | None,
    *,
    kms_client: Any,
    limiter: SignLimiter | None = None,
    observe: Observer | None = None,
    retry: RetryPolicy | None = None,
    pin_source: PinSource | None = None,
) -> Signer:
    """A signer for the key an issuer names: ``pkcs11`` set means a token, else Cloud KMS.

    For a token whose PIN is in a Secret, ``pin_source`` must read it; a ``pinFile``
    is read here (a ``pin_source`` given anyway takes precedence).
    """
    if pkcs11 is None:
        return CloudKmsSigner(
            kms_client, key_version, limiter=limiter, observe=observe, retry=retry
        )
    if pin_source is None:
        if pkcs11.pin_file is None:
            raise ValueError(f"{key_version}: the PIN is in a Secret but no PIN reader was given")
        pin_source = file_pin_source(pkcs11.pin_file, key_version)
    # Imported here, at the first PKCS#11 issuer: python-pkcs11 and asn1crypto are a few MiB
    # of resident memory that an operator signing only with Cloud KMS never needs.
    from signet.kms.pkcs11signer import Pkcs11Signer

    return Pkcs11Signer(pkcs11, pin_source, limiter=limiter, retry=retry, observe=observe)


def _pin_text(raw: bytes) -> str:
    """The PIN as the token wants it: text, without the newline an editor leaves."""
    return raw.decode("utf-8").removesuffix("\n").removesuffix("\r")


def file_pin_source(path: str, key_version: str) -> PinSource:
    """A PIN read from ``path`` at each login (a mounted Secret may be updated in place)."""

    def read() -> str:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(4096)
        except OSError as error:
            raise KmsPinNotFound(
                key_version, f"PIN file {path} cannot be read: {error.strerror}"
            ) from None
        try:
            pin = _pin_text(raw)
        except UnicodeDecodeError:
            raise KmsPinNotFound(key_version, f"PIN file {path} is not UTF-8 text") from None
        if not pin:
            raise KmsPinNotFound(key_version, f"PIN file {path} is empty")
        return pin

    async def source() -> str:
        return await asyncio.to_thread(read)

    return source


def pin_from_secret(
    secret: Mapping[str, Any] | None, namespace: str, ref: PinSecretRef, key_version: str
) -> str:
    """The PIN in a Secret as read from the API, or :class:`KmsPinNotFound` saying which
    Secret or key is missing."""
    where = f"PIN Secret {namespace}/{ref.name}"
    if secret is None:
        raise KmsPinNotFound(key_version, f"{where} not found")
    value = (secret.get("data") or {}).get(ref.key)
    if not isinstance(value, str):
        raise KmsPinNotFound(key_version, f"{where} has no key {ref.key!r}")
    try:
        pin = _pin_text(base64.b64decode(value, validate=True))
    except (ValueError, UnicodeDecodeError):
        raise KmsPinNotFound(key_version, f"{where} key {ref.key!r} is not UTF-8 text") from None
    if not pin:
        raise KmsPinNotFound(key_version, f"{where} key {ref.key!r} is empty")
    return pin

"""RFC 7512 ``pkcs11:`` URIs naming a CA key in an HSM, parsed strictly.

The URI is the key's identity for everything outside the HSM (audit records, status, the
signer cache), so it must be canonical: two spellings of the same key (attribute order,
percent-encoding, a case change in ``%2f``) are one key, and nothing secret may ride along.
RFC 7512 lets a URI carry a PIN (``pin-value``, ``pin-source``) and a module path; an
Issuer spec is readable by anyone who can list Issuers, so those are refused here and come
from ``pinSecretRef``/``pinFile`` and ``module`` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

SCHEME = "pkcs11:"

_TEXT_ATTRIBUTES = ("model", "manufacturer", "serial", "token", "object")
"""Path attributes whose value is text (UTF-8 after percent-decoding)."""
_ORDER = ("model", "manufacturer", "serial", "token", "slot-id", "object", "type", "id")
"""Attribute order of the canonical form: token selectors first, then the object."""
_REFUSED_QUERY = {
    "pin-value": "a PIN in the URI would be stored in the Issuer spec; use pinSecretRef or pinFile",
    "pin-source": "the PIN comes from pinSecretRef or pinFile, not the URI",
    "module-name": "the PKCS#11 module is spec.kms.pkcs11.module, not part of the URI",
    "module-path": "the PKCS#11 module is spec.kms.pkcs11.module, not part of the URI",
}
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SAFE = "-._~:[]@!$'()*+,="
"""RFC 7512 ``pk11-pchar`` characters kept literal in the canonical form (besides
alphanumerics); everything else, ``;``, ``/``, ``?``, ``&``, ``%`` and spaces included,
is percent-encoded."""
MAX_LENGTH = 1024


class Pkcs11UriError(ValueError):
    """The text is not an acceptable ``pkcs11:`` key URI; the message says which rule."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """A private key on a token, as selected by an RFC 7512 URI."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    object: str | None = None
    """``CKA_LABEL`` of the key."""
    id: bytes | None = None
    """``CKA_ID`` of the key (raw bytes)."""

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        """One spelling per key: fixed attribute order, uniform percent-encoding, always
        ``type=private``, never a PIN or module (they cannot be represented here)."""
        values: dict[str, str] = {}
        for name in _TEXT_ATTRIBUTES:
            value = getattr(self, name)
            if value is not None:
                values[name] = quote(value, safe=_SAFE)
        if self.slot_id is not None:
            values["slot-id"] = str(self.slot_id)
        values["type"] = "private"
        if self.id is not None:
            values["id"] = "".join(f"%{b:02X}" for b in self.id)
        return SCHEME + ";".join(f"{k}={values[k]}" for k in _ORDER if k in values)

    @property
    def token_description(self) -> str:
        """How a message names the token: its label, else its serial or slot."""
        if self.token is not None:
            return f"token {self.token!r}"
        if self.serial is not None:
            return f"token with serial {self.serial!r}"
        return f"slot {self.slot_id}"

    @property
    def object_description(self) -> str:
        """How a message names the key: label and/or id."""
        parts = []
        if self.object is not None:
            parts.append(f"object {self.object!r}")
        if self.id is not None:
            parts.append(f"id {self.id.hex()}")
        return " ".join(parts)


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """Parse and validate a key URI; raises :class:`Pkcs11UriError` naming the rule broken.

    Required: a token selector (``token``, ``serial`` or ``slot-id``) and an object
    selector (``object`` or ``id``), so the key cannot silently be whichever one a token
    happens to list first. ``type``, when present, must be ``private``. Vendor attributes
    (``x-...``) are ignored as RFC 7512 allows; any other unknown attribute is refused,
    since a misspelt selector would otherwise widen the match.
    """
    if not isinstance(text, str) or not text.startswith(SCHEME):
        raise Pkcs11UriError("must start with 'pkcs11:'")
    if len(text) > MAX_LENGTH:
        raise Pkcs11UriError(f"must be at most {MAX_LENGTH} characters")
    if _PCT.search(text):
        raise Pkcs11UriError("'%' must start a percent-encoded byte (%XX)")
    path, _, query = text[len(SCHEME) :].partition("?")
    for item in filter(None, query.split("&")):
        name = item.partition("=")[0]
        if name in _REFUSED_QUERY:
            raise Pkcs11UriError(f"query attribute {name!r} is not allowed: {_REFUSED_QUERY[name]}")
        if not name.startswith("x-"):
            raise Pkcs11UriError(f"unknown query attribute {name[:40]!r}")
    fields: dict[str, str] = {}
    for item in filter(None, path.split(";")):
        name, eq, raw = item.partition("=")
        if not eq:
            raise Pkcs11UriError(f"path attribute {name[:40]!r} has no '=value'")
        if name.startswith("x-"):
            continue
        if name not in _ORDER:
            raise Pkcs11UriError(
                f"unknown path attribute {name[:40]!r} (known: {', '.join(_ORDER)})"
            )
        if name in fields:
            raise Pkcs11UriError(f"path attribute {name!r} appears twice")
        fields[name] = raw
    values: dict[str, object] = {}
    for name in _TEXT_ATTRIBUTES:
        if name in fields:
            try:
                values[name] = unquote_to_bytes(fields[name]).decode("utf-8")
            except UnicodeDecodeError:
                raise Pkcs11UriError(f"{name} is not UTF-8 after percent-decoding") from None
            if not values[name]:
                raise Pkcs11UriError(f"{name} must not be empty")
    if "slot-id" in fields:
        if not fields["slot-id"].isdigit() or len(fields["slot-id"]) > 20:
            raise Pkcs11UriError("slot-id must be a decimal number")
        values["slot_id"] = int(fields["slot-id"])
    if "id" in fields:
        key_id = unquote_to_bytes(fields["id"])
        if not key_id:
            raise Pkcs11UriError("id must not be empty")
        values["id"] = key_id
    if "type" in fields and fields["type"] != "private":
        raise Pkcs11UriError(f"type must be 'private' (the signing key), got {fields['type']!r}")
    uri = Pkcs11Uri(**values)  # type: ignore[arg-type]
    if uri.token is None and uri.serial is None and uri.slot_id is None:
        raise Pkcs11UriError("must select a token: token=, serial= or slot-id=")
    if uri.object is None and uri.id is None:
        raise Pkcs11UriError("must select a key: object= (its label) or id=")
    return uri


@dataclass(frozen=True)
class PinSecretRef:
    """Where the token's user PIN is kept: one key of a Secret in the Issuer's namespace
    (the operator's for a ClusterIssuer: letting it name any namespace would need the
    operator to read every Secret)."""

    name: str
    key: str = "pin"


@dataclass(frozen=True)
class Pkcs11Key:
    """``spec.kms.pkcs11``: a private key on a PKCS#11 token and how to log in to it."""

    uri: Pkcs11Uri
    module: str
    """Path of the vendor's PKCS#11 library inside the operator's container."""
    pin_secret: PinSecretRef | None = None
    pin_file: str | None = None
    """Path of a file holding the PIN (a mounted Secret or a vendor agent's file)."""
    algorithm: str | None = None
    """The signing algorithm (a KMS algorithm name); needed to choose RSA PSS over
    PKCS#1 v1.5, otherwise derived from the key."""


_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ALGORITHM = re.compile(r"^[A-Z0-9_]{1,64}$")


def parse_pkcs11_key(raw: object) -> Pkcs11Key:
    """Validate ``spec.kms.pkcs11``; raises ``ValueError`` whose message names the field.

    The algorithm is checked for shape only: the table of algorithms lives in
    ``signet.kms`` (above this layer), and the signer refuses one it does not know with
    ``KMSWrongAlgorithm``.
    """
    if not isinstance(raw, dict):
        raise ValueError("spec.kms.pkcs11: expected an object")
    try:
        uri = parse_pkcs11_uri(raw.get("uri"))  # type: ignore[arg-type]
    except Pkcs11UriError as error:
        raise ValueError(f"spec.kms.pkcs11.uri: {error}") from None
    module = raw.get("module")
    if not isinstance(module, str) or not module.startswith("/") or len(module) > 4096:
        raise ValueError("spec.kms.pkcs11.module: must be an absolute path to the .so module")
    ref, pin_file = raw.get("pinSecretRef"), raw.get("pinFile")
    if (ref is None) == (pin_file is None):
        raise ValueError("spec.kms.pkcs11: set exactly one of pinSecretRef or pinFile")
    pin_secret = None
    if ref is not None:
        if not isinstance(ref, dict):
            raise ValueError("spec.kms.pkcs11.pinSecretRef: expected an object")
        name, key = ref.get("name"), ref.get("key", "pin")
        if not isinstance(name, str) or not _SECRET_NAME.match(name) or len(name) > 253:
            raise ValueError("spec.kms.pkcs11.pinSecretRef.name: must be a Secret name")
        if not isinstance(key, str) or not _SECRET_KEY.match(key) or len(key) > 253:
            raise ValueError("spec.kms.pkcs11.pinSecretRef.key: must be a Secret data key")
        pin_secret = PinSecretRef(name, key)
    elif not isinstance(pin_file, str) or not pin_file.startswith("/"):
        raise ValueError("spec.kms.pkcs11.pinFile: must be an absolute path")
    algorithm = raw.get("algorithm")
    if algorithm is not None and (
        not isinstance(algorithm, str) or not _ALGORITHM.match(algorithm)
    ):
        raise ValueError(
            f"spec.kms.pkcs11.algorithm: {str(algorithm)[:64]!r} is not an algorithm name "
            "such as RSA_SIGN_PSS_2048_SHA256"
        )
    return Pkcs11Key(uri, module, pin_secret, pin_file, algorithm)

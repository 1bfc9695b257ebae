"""How a Certificate's Secret is laid out beyond tls.crt/tls.key/ca.crt: cert-manager's fields.

``privateKey.encoding``, ``keystores`` and ``additionalOutputFormats`` change only how the
same key and chain are written, never what is signed. So they stay out of the spec's content
hash (changing them costs no signature) and get a fingerprint of their own, kept on the
Secret, from which the controller sees that the data must be rewritten. As in cert-manager,
a keystore's password is read when the data is written: a changed password reaches the
keystore at the next write (a renewal, or a change of these fields), not by itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from signet.api.errors import SpecError
from signet.reasons import Reason

ENCODINGS = ("PKCS1", "PKCS8")
DEFAULT_ENCODING = "PKCS1"
"""cert-manager's default: PKCS#1 for RSA and SEC1 for ECDSA; Ed25519 has only PKCS#8."""
PKCS12_PROFILES = ("LegacyRC2", "LegacyDES", "Modern2023")
DEFAULT_PKCS12_PROFILE = "LegacyRC2"
OUTPUT_FORMATS = ("CombinedPEM", "DER")
JKS_REFUSED = (
    "spec.keystores.jks: Signet does not write JKS keystores (no maintained Python library "
    "writes them); use spec.keystores.pkcs12, which Java 9 and later read as their default "
    "keystore type"
)
"""Worded as the CRD's CEL rule on spec.keystores words it."""
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the Certificate's own namespace (cert-manager's
    ``SecretKeySelector``)."""

    name: str
    key: str


@dataclass(frozen=True)
class PKCS12Keystore:
    """``keystores.pkcs12``: a password from a Secret, or given literally (cert-manager's
    ``password``, for a password that protects nothing worth hiding)."""

    password_secret: SecretKeyRef | None = None
    password: str | None = field(default=None, repr=False)
    profile: str = DEFAULT_PKCS12_PROFILE


@dataclass(frozen=True)
class SecretOutputs:
    """What a Secret holds besides the certificate itself."""

    encoding: str | None = None
    """``privateKey.encoding`` as written in the spec; None means cert-manager's default."""
    pkcs12: PKCS12Keystore | None = None
    formats: tuple[str, ...] = ()

    @property
    def key_encoding(self) -> str:
        return self.encoding or DEFAULT_ENCODING

    def fingerprint(self) -> str | None:
        """What the Secret's outputs annotation must say; None when nothing is asked beyond
        the default (Secrets written before these fields existed carry no annotation and
        must not all be rewritten because of it). A literal password is left out: it is
        never written anywhere but into the keystore."""
        if self == SecretOutputs():
            return None
        shaped = {
            "encoding": self.encoding,
            "pkcs12": None
            if self.pkcs12 is None
            else {
                "profile": self.pkcs12.profile,
                "from": "literal"
                if self.pkcs12.password is not None
                else [self.pkcs12.password_secret.name, self.pkcs12.password_secret.key]
                if self.pkcs12.password_secret
                else None,
            },
            "formats": sorted(self.formats),
        }
        encoded = json.dumps(shaped, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:20]


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(Reason.INVALID_SPEC, f"{where}: expected an object")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 253:
        raise SpecError(Reason.INVALID_SPEC, f"{where}: a non-empty string is required")
    return value


def _pkcs12(raw: Mapping[str, Any]) -> PKCS12Keystore | None:
    where = "spec.keystores.pkcs12"
    if raw.get("create") is not True:
        if raw.get("create") not in (False, None):
            raise SpecError(Reason.INVALID_SPEC, f"{where}.create: expected true or false")
        return None
    profile = raw.get("profile", DEFAULT_PKCS12_PROFILE)
    if profile not in PKCS12_PROFILES:
        raise SpecError(
            Reason.INVALID_SPEC,
            f"{where}.profile: {str(profile)[:32]!r} is not one of {', '.join(PKCS12_PROFILES)}",
        )
    password, ref = raw.get("password"), raw.get("passwordSecretRef")
    if (password is None) == (ref is None):
        raise SpecError(
            Reason.INVALID_SPEC, f"{where}: set exactly one of password or passwordSecretRef"
        )
    if password is not None:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise SpecError(
                Reason.INVALID_SPEC,
                f"{where}.password: a string of at most {MAX_PASSWORD} characters",
            )
        return PKCS12Keystore(password=password, profile=profile)
    selector = _object(ref, f"{where}.passwordSecretRef")
    return PKCS12Keystore(
        password_secret=SecretKeyRef(
            _name(selector.get("name"), f"{where}.passwordSecretRef.name"),
            _name(selector.get("key"), f"{where}.passwordSecretRef.key"),
        ),
        profile=profile,
    )


def parse_outputs(spec: Mapping[str, Any], private_key: Mapping[str, Any]) -> SecretOutputs:
    """The output fields of a Certificate ``spec`` (``private_key`` is its privateKey).
    Raises `SpecError` naming the field."""
    encoding = private_key.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.privateKey.encoding: {str(encoding)[:32]!r} is not PKCS1 or PKCS8",
        )
    keystores = _object(spec.get("keystores"), "spec.keystores")
    jks = _object(keystores.get("jks"), "spec.keystores.jks")
    if jks.get("create") is True:
        raise SpecError(Reason.INVALID_SPEC, JKS_REFUSED)
    pkcs12 = _pkcs12(_object(keystores.get("pkcs12"), "spec.keystores.pkcs12"))
    raw_formats = spec.get("additionalOutputFormats") or []
    if not isinstance(raw_formats, list):
        raise SpecError(Reason.INVALID_SPEC, "spec.additionalOutputFormats: expected a list")
    formats: list[str] = []
    for index, entry in enumerate(raw_formats):
        kind = _object(entry, f"spec.additionalOutputFormats[{index}]").get("type")
        if kind not in OUTPUT_FORMATS:
            raise SpecError(
                Reason.INVALID_SPEC,
                f"spec.additionalOutputFormats[{index}].type: {str(kind)[:32]!r} is not one "
                f"of {', '.join(OUTPUT_FORMATS)}",
            )
        if kind in formats:
            raise SpecError(
                Reason.INVALID_SPEC,
                f"spec.additionalOutputFormats[{index}].type: {kind} is listed twice",
            )
        formats.append(kind)
    outputs = SecretOutputs(encoding=encoding, pkcs12=pkcs12, formats=tuple(formats))
    if spec.get("ssh") is not None and outputs != SecretOutputs():
        raise SpecError(
            Reason.INVALID_SPEC,
            "spec.ssh: privateKey.encoding, keystores and additionalOutputFormats are for "
            "X.509 certificates only",
        )
    return outputs

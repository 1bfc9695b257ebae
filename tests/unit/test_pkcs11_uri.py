"""RFC 7512 key URIs and ``spec.kms.pkcs11``: parsed strictly, named canonically, no PIN."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from signet.api import SpecError
from signet.api.issuer import parse_issuer_spec
from signet.api.pkcs11uri import PinSecretRef, Pkcs11UriError, parse_pkcs11_key, parse_pkcs11_uri
from signet.kms.backends import pin_from_secret
from signet.kms.errors import KmsPinNotFound


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("pkcs11:token=ca;object=key", "pkcs11:token=ca;object=key;type=private"),
        (
            "pkcs11:id=%01%ab;object=My%20Key;token=Signet%20CA;type=private",
            "pkcs11:token=Signet%20CA;object=My%20Key;type=private;id=%01%AB",
        ),
        ("pkcs11:serial=0123;id=%7f", "pkcs11:serial=0123;type=private;id=%7F"),
        ("pkcs11:slot-id=3;object=k;x-vendor=1", "pkcs11:slot-id=3;object=k;type=private"),
        ("pkcs11:token=a%3bb;object=k", "pkcs11:token=a%3Bb;object=k;type=private"),
    ],
)
def test_one_canonical_spelling_per_key(text: str, canonical: str) -> None:
    uri = parse_pkcs11_uri(text)
    assert uri.canonical == canonical
    assert parse_pkcs11_uri(canonical) == uri  # the canonical form parses to the same key


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("pkcs11:token=a;object=k?pin-value=1234", "pin-value"),
        ("pkcs11:token=a;object=k?pin-source=file:/pin", "pin-source"),
        ("pkcs11:token=a;object=k?module-path=/x.so", "module-path"),
        ("pkcs11:object=k", "must select a token"),
        ("pkcs11:token=a", "must select a key"),
        ("pkcs11:token=a;object=k;type=cert", "type must be 'private'"),
        ("pkcs11:token=a;token=b;object=k", "appears twice"),
        ("pkcs11:token=a;lable=k", "unknown path attribute 'lable'"),
        ("pkcs11:token=a;object=%zz", "percent-encoded"),
        ("pkcs11:token=a;object=%ff", "not UTF-8"),
        ("pkcs11:slot-id=x;object=k", "slot-id must be a decimal"),
        ("pkcs11:token=a;object", "has no '=value'"),
        ("cloudkms:projects/p", "must start with 'pkcs11:'"),
    ],
)
def test_bad_uris_are_refused_naming_the_rule(text: str, rule: str) -> None:
    with pytest.raises(Pkcs11UriError, match=rule):
        parse_pkcs11_uri(text)


def test_a_pin_in_the_uri_never_reaches_the_error() -> None:
    with pytest.raises(Pkcs11UriError) as info:
        parse_pkcs11_uri("pkcs11:token=a;object=k?pin-value=s3cret-pin")
    assert "s3cret-pin" not in str(info.value)


def _spec(**pkcs11: Any) -> dict[str, Any]:
    key = {"uri": "pkcs11:token=ca;object=key", "module": "/usr/lib/softhsm/libsofthsm2.so"}
    return {"kms": {"pkcs11": {**key, **pkcs11}}, "ssh": {"enabled": True}}


def test_an_issuer_names_its_hsm_key_by_the_canonical_uri() -> None:
    spec = parse_issuer_spec("Issuer", "ca", "shop", _spec(pinSecretRef={"name": "hsm-pin"}))
    assert spec.key_version == "pkcs11:token=ca;object=key;type=private"
    assert spec.pkcs11 is not None
    assert spec.pkcs11.pin_secret == PinSecretRef("hsm-pin", "pin")
    assert spec.pkcs11.module == "/usr/lib/softhsm/libsofthsm2.so"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(), "exactly one of pinSecretRef or pinFile"),
        (_spec(pinFile="/pin", pinSecretRef={"name": "p"}), "exactly one of pinSecretRef"),
        (_spec(pinFile="pin"), "pinFile: must be an absolute path"),
        (_spec(pinFile="/pin", module="libsofthsm2.so"), "module: must be an absolute path"),
        (_spec(pinFile="/pin", uri="pkcs11:token=ca"), "uri: must select a key"),
        (_spec(pinSecretRef={"name": "Bad_Name"}), "pinSecretRef.name"),
        (_spec(pinFile="/pin", algorithm="rsa"), "algorithm"),
        (
            {
                "kms": {"cloudKMS": {"keyVersion": "x"}, "pkcs11": _spec()["kms"]["pkcs11"]},
                "ssh": {},
            },
            "exactly one of cloudKMS or pkcs11",
        ),
    ],
)
def test_bad_pkcs11_specs_are_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_issuer_spec("Issuer", "ca", "shop", spec)
    assert info.value.reason == "InvalidKeyVersion"
    assert message in info.value.message
    assert "spec.kms" in info.value.message


def test_parse_pkcs11_key_keeps_the_chosen_algorithm() -> None:
    key = parse_pkcs11_key(
        {
            "uri": "pkcs11:token=ca;id=%03",
            "module": "/m.so",
            "pinFile": "/run/pin",
            "algorithm": "RSA_SIGN_PSS_2048_SHA256",
        }
    )
    assert key.algorithm == "RSA_SIGN_PSS_2048_SHA256" and key.pin_file == "/run/pin"


def _secret(**data: bytes) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def test_the_pin_is_read_from_its_secret_without_the_trailing_newline() -> None:
    ref = PinSecretRef("hsm-pin")
    assert pin_from_secret(_secret(pin=b"1234\n"), "ns", ref, "pkcs11:x") == "1234"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "PIN Secret ns/hsm-pin not found"),
        (_secret(other=b"1"), "has no key 'pin'"),
        (_secret(pin=b""), "is empty"),
        (_secret(pin=b"\xff"), "is not UTF-8"),
    ],
)
def test_a_missing_pin_names_where_it_was_looked_for(
    secret: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(KmsPinNotFound, match=message) as info:
        pin_from_secret(secret, "ns", PinSecretRef("hsm-pin"), "pkcs11:x")
    assert info.value.reason == "HSMPINNotFound"

"""The algorithm table agrees with the KMS API and with itself."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, padding
from google.cloud.kms_v1 import CryptoKeyVersion

from signet.kms.algorithms import (
    ALGORITHMS,
    KeyType,
    Padding,
    UnsupportedAlgorithmError,
    get_algorithm,
    make_verifier,
)

EXPECTED = {
    "EC_SIGN_P256_SHA256",
    "EC_SIGN_P384_SHA384",
    "RSA_SIGN_PKCS1_2048_SHA256",
    "RSA_SIGN_PKCS1_3072_SHA256",
    "RSA_SIGN_PKCS1_4096_SHA256",
    "RSA_SIGN_PKCS1_4096_SHA512",
    "RSA_SIGN_PSS_2048_SHA256",
    "RSA_SIGN_PSS_3072_SHA256",
    "RSA_SIGN_PSS_4096_SHA256",
    "EC_SIGN_ED25519",
}


def test_table_covers_exactly_the_supported_kms_enum_names() -> None:
    assert set(ALGORITHMS) == EXPECTED
    kms_names = set(CryptoKeyVersion.CryptoKeyVersionAlgorithm.__members__)
    assert set(ALGORITHMS) <= kms_names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_names_encode_hash_and_size(name: str) -> None:
    alg = get_algorithm(name)
    if alg.key_type is KeyType.ED25519:
        assert alg.hash_name is None and not alg.prehashed
        with pytest.raises(ValueError):
            _ = alg.digest_field
        return
    assert name.endswith("_" + alg.digest_field.upper())
    assert len(alg.digest(b"x")) == alg.digest_size
    if alg.key_type is KeyType.RSA:
        assert f"_{alg.key_size}_" in name
        assert (alg.padding is Padding.PSS) == ("_PSS_" in name)


def test_pss_salt_equals_digest_length() -> None:
    pad = get_algorithm("RSA_SIGN_PSS_3072_SHA256").rsa_padding()
    assert isinstance(pad, padding.PSS)
    assert pad._salt_length == 32


def test_unknown_algorithm_lists_supported() -> None:
    with pytest.raises(UnsupportedAlgorithmError, match="EC_SIGN_P256_SHA256"):
        get_algorithm("GOOGLE_SYMMETRIC_ENCRYPTION")


@pytest.mark.parametrize(
    "name", ["EC_SIGN_P384_SHA384", "EC_SIGN_ED25519", "RSA_SIGN_PSS_2048_SHA256"]
)
def test_local_sign_verify_roundtrip_and_tamper(name: str) -> None:
    alg = get_algorithm(name)
    key = alg.generate_private_key()
    data = b"tbs certificate bytes"
    payload = alg.digest(data) if alg.prehashed else data
    sig = alg.sign_prepared(key, payload)
    verify = make_verifier(name, key.public_key())
    assert verify(sig, data)
    assert not verify(sig, data + b"!")


def test_verifier_rejects_key_of_wrong_type() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(TypeError):
        make_verifier("EC_SIGN_P384_SHA384", p256)

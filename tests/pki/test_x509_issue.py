"""Leaf and CA certificates from every KMS algorithm pass ``openssl verify -x509_strict``."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from signet.kms.algorithms import get_algorithm
from signet.kms.emulator import Counters
from signet.pki.keys import LeafPrivateKey
from signet.pki.x509 import BACKDATE, LeafRequest, build_leaf
from tests.pki.conftest import (
    CA_ALGORITHMS,
    LEAF_KEY_TYPES,
    CaFactory,
    exact,
    openssl_text,
    openssl_verify,
)

LeafKeys = Callable[[str, int | None], LeafPrivateKey]

EXPECTED_SIGNATURE_TEXT = {
    "EC_SIGN_P256_SHA256": ["Signature Algorithm: ecdsa-with-SHA256"],
    "EC_SIGN_P384_SHA384": ["Signature Algorithm: ecdsa-with-SHA384"],
    "RSA_SIGN_PKCS1_2048_SHA256": ["Signature Algorithm: sha256WithRSAEncryption"],
    "RSA_SIGN_PKCS1_3072_SHA256": ["Signature Algorithm: sha256WithRSAEncryption"],
    "RSA_SIGN_PKCS1_4096_SHA256": ["Signature Algorithm: sha256WithRSAEncryption"],
    "RSA_SIGN_PKCS1_4096_SHA512": ["Signature Algorithm: sha512WithRSAEncryption"],
    "RSA_SIGN_PSS_2048_SHA256": [
        "Signature Algorithm: rsassaPss",
        "Hash Algorithm: sha256",
        "Mask Algorithm: mgf1 with sha256",
        "Salt Length: 0x20",
    ],
    "RSA_SIGN_PSS_3072_SHA256": ["Signature Algorithm: rsassaPss", "Salt Length: 0x20"],
    "RSA_SIGN_PSS_4096_SHA256": ["Signature Algorithm: rsassaPss", "Salt Length: 0x20"],
    "EC_SIGN_ED25519": ["Signature Algorithm: ED25519"],
}


def test_expected_table_covers_every_algorithm() -> None:
    assert sorted(EXPECTED_SIGNATURE_TEXT) == sorted(CA_ALGORITHMS)


@pytest.mark.parametrize("algorithm", CA_ALGORITHMS)
def test_self_signed_ca_profile(algorithm: str, kms_ca: CaFactory, tmp_path: Path) -> None:
    ca = kms_ca(algorithm)
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    # openssl checks the root against itself, including the x509_strict profile rules.
    result = openssl_verify(tmp_path, cert, cert)
    assert result.returncode == 0, result.stdout + result.stderr
    text = openssl_text(cert)
    for needle in EXPECTED_SIGNATURE_TEXT[algorithm]:
        assert needle in text, f"{needle!r} missing from:\n{text}"


@pytest.mark.parametrize(("leaf_algorithm", "leaf_size"), LEAF_KEY_TYPES)
@pytest.mark.parametrize("algorithm", CA_ALGORITHMS)
def test_leaf_verifies_with_openssl(
    algorithm: str,
    leaf_algorithm: str,
    leaf_size: int | None,
    kms_ca: CaFactory,
    leaf_keys: LeafKeys,
    kms_counters: Counters,
    tmp_path: Path,
) -> None:
    ca = kms_ca(algorithm)
    key = leaf_keys(leaf_algorithm, leaf_size)
    request = LeafRequest(
        common_name="web.example.com",
        dns_names=("web.example.com", "*.web.example.com"),
        ip_addresses=("127.0.0.1", "::1"),
        usages=("digital signature", "key encipherment", "server auth", "client auth"),
        duration=datetime.timedelta(hours=1),
    )
    kms_counters.reset()
    leaf = ca.sign(lambda k: build_leaf(request, key.public_key(), ca.certificate, k))

    assert kms_counters.count("AsymmetricSign", ca.key_version) == 1
    result = openssl_verify(tmp_path, ca.certificate, leaf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    text = openssl_text(leaf)
    for needle in EXPECTED_SIGNATURE_TEXT[algorithm]:
        assert needle in text
    alg = get_algorithm(algorithm)
    if alg.padding.value == "PSS":
        assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment == isinstance(key, rsa.RSAPrivateKey)


def test_leaf_profile(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    key = leaf_keys("ECDSA", 256)
    request = LeafRequest(
        organizations=("Example Corp",),
        countries=("DE",),
        common_name="api.example.com",
        dns_names=("api.example.com",),
        ip_addresses=("10.0.0.1",),
        uris=("https://example.com/api",),
        email_addresses=("ops@example.com",),
        usages=("digital signature", "server auth"),
        duration=datetime.timedelta(days=7),
    )
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    leaf = ca.sign(lambda k: build_leaf(request, key.public_key(), ca.certificate, k, now=now))

    assert 0 < leaf.serial_number < 2**128
    assert leaf.not_valid_before_utc == now - BACKDATE
    assert leaf.not_valid_after_utc == now + datetime.timedelta(days=7)
    assert leaf.issuer == ca.certificate.subject
    assert leaf.subject.rfc4514_string() == "CN=api.example.com,O=Example Corp,C=DE"
    ext = leaf.extensions
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["api.example.com"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "https://example.com/api"
    ]
    assert san.value.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.value.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_spiffe_svid_profile(kms_ca: CaFactory, leaf_keys: LeafKeys, tmp_path: Path) -> None:
    ca = kms_ca("RSA_SIGN_PSS_2048_SHA256")
    key = leaf_keys("RSA", 2048)
    request = LeafRequest(spiffe_id="spiffe://example.org/ns/default/sa/web")
    leaf = ca.sign(lambda k: build_leaf(request, key.public_key(), ca.certificate, k))

    assert len(leaf.subject) == 0
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical, "an empty subject requires a critical SAN"
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/ns/default/sa/web"
    ]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    result = openssl_verify(tmp_path, ca.certificate, leaf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_not_after_is_clamped_to_the_issuer(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    key = leaf_keys("Ed25519", None)
    request = LeafRequest(common_name="long", duration=datetime.timedelta(days=3650))
    leaf = ca.sign(lambda k: build_leaf(request, key.public_key(), ca.certificate, k))
    assert leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_expired_issuer_is_refused(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    key = leaf_keys("ECDSA", 256)
    later = ca.certificate.not_valid_after_utc + datetime.timedelta(seconds=1)
    with pytest.raises(
        ValueError,
        match="^" + re.escape("issuer 'CN=Signet test CA EC_SIGN_P256_SHA256' expired at "),
    ):
        ca.sign(
            lambda k: build_leaf(
                LeafRequest(common_name="x"), key.public_key(), ca.certificate, k, now=later
            )
        )


def test_issuer_certificate_must_match_the_kms_key(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    other = kms_ca("EC_SIGN_P384_SHA384")
    key = leaf_keys("ECDSA", 256)
    with pytest.raises(ValueError, match="is not for the KMS key version EC_SIGN_P256_SHA256"):
        ca.sign(
            lambda k: build_leaf(
                LeafRequest(common_name="x"), key.public_key(), other.certificate, k
            )
        )


def test_leaf_cannot_sign_as_issuer(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    """A leaf certificate (CA:false) for the KMS key, handed in as issuer, is refused."""
    ca = kms_ca("EC_SIGN_P384_SHA384")
    other = kms_ca("EC_SIGN_P256_SHA256")
    leaf_for_kms_key = other.sign(
        lambda k: build_leaf(
            LeafRequest(common_name="leaf"), ca.certificate.public_key(), other.certificate, k
        )
    )
    key = leaf_keys("ECDSA", 256)
    with pytest.raises(ValueError, match=exact("issuer 'CN=leaf' is not a CA certificate")):
        ca.sign(
            lambda k: build_leaf(
                LeafRequest(common_name="x"), key.public_key(), leaf_for_kms_key, k
            )
        )


def test_ca_key_is_not_certified_as_a_leaf(kms_ca: CaFactory) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    with pytest.raises(ValueError, match=exact("the leaf key must not be the CA's own key")):
        ca.sign(
            lambda k: build_leaf(
                LeafRequest(common_name="x"), ca.certificate.public_key(), ca.certificate, k
            )
        )


def test_key_agreement_for_ec_and_refused_for_rsa(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    request = LeafRequest(common_name="x", usages=("digital signature", "key agreement"))
    ec_key = leaf_keys("ECDSA", 384)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    leaf = ca.sign(lambda k: build_leaf(request, ec_key.public_key(), ca.certificate, k))
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    rsa_key = leaf_keys("RSA", 2048)
    with pytest.raises(ValueError, match=exact("usage 'key agreement' needs an ECDSA key")):
        ca.sign(lambda k: build_leaf(request, rsa_key.public_key(), ca.certificate, k))

"""The KMS key adapters: one KMS call per certificate, nothing exportable, no silent mismatch."""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
from collections.abc import Callable

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from signet.kms.emulator import Counters, Faults
from signet.kms.errors import KmsPermissionDenied
from signet.pki.kmskey import (
    KeyNotExportableError,
    KmsPrivateKey,
    KmsSignatureMismatchError,
    SignatureSpentError,
    sign_in_thread,
)
from signet.pki.x509 import LeafRequest, build_leaf
from tests.kms_fixtures import KmsRunner
from tests.pki.conftest import CaFactory, exact

TBS = b"\x30\x03\x02\x01\x01 some bytes to sign"


@pytest.mark.parametrize(
    ("algorithm", "abc"),
    [
        ("EC_SIGN_P384_SHA384", ec.EllipticCurvePrivateKey),
        ("RSA_SIGN_PKCS1_2048_SHA256", rsa.RSAPrivateKey),
        ("EC_SIGN_ED25519", ed25519.Ed25519PrivateKey),
    ],
)
def test_adapter_is_a_real_private_key_that_cannot_be_exported(
    algorithm: str, abc: type, kms_ca: CaFactory, kms_counters: Counters
) -> None:
    ca = kms_ca(algorithm)
    kms_counters.reset()  # count only what the test does

    def build(key: KmsPrivateKey) -> str:
        assert isinstance(key, abc)
        assert key.public_key() == ca.certificate.public_key()
        refused = []
        attempts: list[Callable[[], object]] = [
            lambda: key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            lambda: copy.copy(key),
            lambda: copy.deepcopy(key),
        ]
        for attempt in attempts:
            with pytest.raises(KeyNotExportableError) as info:
                attempt()
            refused.append(str(info.value))
        if isinstance(key, ec.EllipticCurvePrivateKey):
            with pytest.raises(KeyNotExportableError):
                key.private_numbers()
            with pytest.raises(KeyNotExportableError):
                key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP384R1()).public_key())
        if isinstance(key, rsa.RSAPrivateKey):
            with pytest.raises(KeyNotExportableError):
                key.private_numbers()
            with pytest.raises(KeyNotExportableError):
                key.decrypt(b"x", padding.PKCS1v15())
        if isinstance(key, ed25519.Ed25519PrivateKey):
            with pytest.raises(KeyNotExportableError):
                key.private_bytes_raw()
        _sign_once(key)
        return refused[0]

    message = ca.sign(build)
    assert message == (
        f"private_bytes() is not available: the {algorithm} private key is held in Cloud KMS "
        "and can only sign"
    )
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 1


def _sign_once(key: KmsPrivateKey) -> bytes:
    """Sign ``TBS`` with exactly the scheme the key's KMS algorithm uses."""
    alg = key.algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(TBS)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(TBS, ec.ECDSA(alg.hash_algorithm()))
    return key.sign(TBS, alg.rsa_padding(), alg.hash_algorithm())


def test_second_signature_is_refused_before_reaching_kms(
    kms_ca: CaFactory, kms_counters: Counters
) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    kms_counters.reset()  # count only what the test does

    def build(key: KmsPrivateKey) -> None:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key.sign(TBS, ec.ECDSA(hashes.SHA256()))
        key.sign(TBS, ec.ECDSA(hashes.SHA256()))

    with pytest.raises(RuntimeError, match="was asked for a second signature"):
        ca.sign(build)
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 1


def test_builder_that_never_signs_is_an_error(kms_ca: CaFactory, kms_counters: Counters) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    kms_counters.reset()  # count only what the test does
    with pytest.raises(
        RuntimeError,
        match=exact(f"certificate builder returned without signing with {ca.key_version}"),
    ):
        ca.sign(lambda key: None)
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 0


@pytest.mark.parametrize(
    ("algorithm", "args", "message"),
    [
        (
            "RSA_SIGN_PSS_2048_SHA256",
            (padding.PKCS1v15(), hashes.SHA256()),
            "RSA_SIGN_PSS_2048_SHA256 signs RSA PSS with sha256 (salt 32); the builder asked "
            "for PKCS1v15 with sha256",
        ),
        (
            "RSA_SIGN_PSS_2048_SHA256",
            (padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()),
            "RSA_SIGN_PSS_2048_SHA256 signs RSA PSS with sha256 (salt 32); the builder asked "
            "for PSS (salt MaxLength) with sha256",
        ),
        (
            "RSA_SIGN_PKCS1_4096_SHA512",
            (padding.PKCS1v15(), hashes.SHA256()),
            "RSA_SIGN_PKCS1_4096_SHA512 signs RSA PKCS1V15 with sha512; the builder asked for "
            "PKCS1v15 with sha256",
        ),
        (
            "EC_SIGN_P256_SHA256",
            (ec.ECDSA(hashes.SHA384()),),
            "EC_SIGN_P256_SHA256 signs ECDSA with sha256 over the data; the builder asked for "
            "ECDSA with sha384",
        ),
    ],
)
def test_signature_scheme_mismatch_is_refused(
    algorithm: str,
    args: tuple[object, ...],
    message: str,
    kms_ca: CaFactory,
    kms_counters: Counters,
) -> None:
    ca = kms_ca(algorithm)
    kms_counters.reset()  # count only what the test does
    with pytest.raises(KmsSignatureMismatchError, match=exact(message)):
        ca.sign(lambda key: key.sign(TBS, *args))  # type: ignore[arg-type]
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 0


def test_kms_errors_reach_the_caller(kms_ca: CaFactory, kms_faults: Faults) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    kms_faults.fail_next(3, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(KmsPermissionDenied):
        ca.sign(_sign_once)


def test_slow_kms_times_out_the_builder_thread(
    kms_ca: CaFactory, kms_faults: Faults, kms_runner: KmsRunner
) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    kms_faults.latency_s = 1.0
    kms_faults.methods = frozenset({"AsymmetricSign"})
    with pytest.raises(
        TimeoutError, match=exact(f"KMS did not sign with {ca.key_version} within 0.2s")
    ):
        kms_runner.run(
            sign_in_thread(
                ca.signer,
                _sign_once,
                sign_timeout=0.2,
            )
        )


def test_concurrent_certificates_each_sign_once(
    kms_ca: CaFactory, kms_runner: KmsRunner, kms_counters: Counters
) -> None:
    """Many builders in worker threads share one loop and one signer without deadlock."""
    ca = kms_ca("RSA_SIGN_PKCS1_2048_SHA256")
    kms_counters.reset()  # count only what the test does
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    count = 24

    def build(name: str, key: KmsPrivateKey) -> x509.Certificate:
        request = LeafRequest(common_name=name, duration=datetime.timedelta(hours=1))
        return build_leaf(request, leaf_key, ca.certificate, key)

    async def issue_all() -> list[x509.Certificate]:
        return await asyncio.gather(
            *(sign_in_thread(ca.signer, functools.partial(build, f"w{i}")) for i in range(count))
        )

    certs = kms_runner.run(issue_all())
    assert sorted(c.subject.rfc4514_string() for c in certs) == sorted(
        f"CN=w{i}" for i in range(count)
    )
    for cert in certs:
        cert.verify_directly_issued_by(ca.certificate)
    assert len({c.serial_number for c in certs}) == count
    assert kms_counters.count("AsymmetricSign", ca.key_version, "OK") == count


def test_on_signed_runs_when_kms_answers_before_the_builder_goes_on(
    kms_ca: CaFactory, kms_runner: KmsRunner, kms_counters: Counters
) -> None:
    """The audit hook sees the signature exist before anything after it can fail; a builder
    that fails then reports the signature as spent, not as an ordinary error."""
    ca = kms_ca("EC_SIGN_P256_SHA256")
    kms_counters.reset()
    order: list[str] = []

    def build(key: KmsPrivateKey) -> None:
        key.sign(TBS, ec.ECDSA(hashes.SHA256()))
        order.append("builder resumed")
        raise ValueError("encoding failed")

    with pytest.raises(SignatureSpentError) as raised:
        kms_runner.run(sign_in_thread(ca.signer, build, on_signed=lambda: order.append("hook")))
    assert order == ["hook", "builder resumed"]
    assert raised.value.key_version == ca.key_version
    assert kms_counters.count("AsymmetricSign", ca.key_version, "OK") == 1


def test_on_signed_is_not_called_when_kms_refuses(
    kms_ca: CaFactory, kms_runner: KmsRunner, kms_faults: Faults
) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    kms_faults.fail_next(1, grpc.StatusCode.PERMISSION_DENIED)
    called: list[str] = []
    with pytest.raises(KmsPermissionDenied):
        kms_runner.run(
            sign_in_thread(ca.signer, _sign_once, on_signed=lambda: called.append("hook"))
        )
    assert called == []

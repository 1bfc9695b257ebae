"""Every supported algorithm signs through the real client and verifies independently."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.cloud import kms_v1

from signet.kms.algorithms import ALGORITHMS, make_verifier
from signet.kms.emulator import Counters
from tests.kms.conftest import fetch_public_key, openssl_verify
from tests.kms_fixtures import KeyFactory, KmsRunner

DATA = b"\x30\x82 pretend this is a TBSCertificate " * 20


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_signs_once_and_verifies(
    algorithm: str,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_admin: kms_v1.KeyManagementServiceClient,
    kms_counters: Counters,
) -> None:
    version = kms_key_factory(algorithm)
    signer = kms_runner.signer(version, verify_signatures=False, expected_algorithm=algorithm)

    public = kms_runner.run(signer.public_key())
    signature = kms_runner.run(signer.sign(DATA))

    assert public.key_version == version and public.algorithm == algorithm
    pem, key = fetch_public_key(kms_admin, version)
    assert pem == public.pem
    verify = make_verifier(algorithm, key)
    assert verify(signature, DATA)
    assert not verify(signature, DATA[:-1])
    assert kms_counters.count("AsymmetricSign", version) == 1
    assert kms_counters.count("AsymmetricSign", version, "OK") == 1


@pytest.mark.parametrize(
    "algorithm", ["EC_SIGN_P256_SHA256", "RSA_SIGN_PSS_2048_SHA256", "EC_SIGN_ED25519"]
)
def test_openssl_agrees(
    algorithm: str,
    openssl: str,
    tmp_path: Path,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
) -> None:
    signer = kms_runner.signer(kms_key_factory(algorithm))
    signature = kms_runner.run(signer.sign(DATA))
    pem = kms_runner.run(signer.public_key()).pem

    good = openssl_verify(tmp_path, algorithm, pem, DATA, signature)
    assert good.returncode == 0, good.stderr.decode()
    bad = openssl_verify(tmp_path, algorithm, pem, DATA + b"x", signature)
    assert bad.returncode != 0


def test_signatures_from_worker_threads(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_counters: Counters
) -> None:
    """The pki pattern: synchronous builders submit sign() to the loop from threads."""
    import asyncio

    from tests.kms_fixtures import run_in_threads

    version = kms_key_factory("EC_SIGN_P256_SHA256")
    signer = kms_runner.signer(version)
    key = kms_runner.run(signer.public_key()).public_key
    verify = make_verifier("EC_SIGN_P256_SHA256", key)

    def sign(i: int) -> bool:
        data = DATA + i.to_bytes(4, "big")
        fut = asyncio.run_coroutine_threadsafe(signer.sign(data), kms_runner.loop)
        return verify(fut.result(30), data)

    assert all(run_in_threads(sign, 40))
    assert kms_counters.count("AsymmetricSign", version, "OK") == 40
    assert kms_counters.count("AsymmetricSign", version) == 40


def test_signer_refuses_a_second_event_loop(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner
) -> None:
    import asyncio

    signer = kms_runner.warm_signer(kms_key_factory("EC_SIGN_P256_SHA256"))
    with pytest.raises(RuntimeError, match="bound to another event loop"):
        asyncio.run(signer.sign(b"x"))


def test_signer_rejects_malformed_version_name(kms_runner: KmsRunner) -> None:
    with pytest.raises(ValueError, match="not a crypto key version name"):
        kms_runner.signer("projects/p/locations/global/keyRings/r/cryptoKeys/k")

"""Corrupted or misrouted responses are detected, retried a bounded number of times, and
reported as KMSIntegrityError."""

from __future__ import annotations

import pytest

from signet.kms.cloudkms import RetryPolicy, SignObservation
from signet.kms.emulator import Counters, Faults
from signet.kms.errors import KmsIntegrityError
from tests.kms_fixtures import KeyFactory, KmsRunner

P256 = "EC_SIGN_P256_SHA256"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("corrupt_signature_crc", "CRC32C"),
        ("drop_verified_crc", "did not confirm the request checksum"),
    ],
)
def test_bad_sign_response_is_retried_then_rejected(
    fault: str,
    message: str,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_faults: Faults,
    kms_counters: Counters,
) -> None:
    version = kms_key_factory(P256)
    seen: list[SignObservation] = []
    signer = kms_runner.warm_signer(
        version,
        retry=RetryPolicy(max_integrity_retries=2, initial_backoff=0.01),
        observe=seen.append,
    )
    setattr(kms_faults, fault, True)

    with pytest.raises(KmsIntegrityError, match=message) as info:
        kms_runner.run(signer.sign(b"tbs"))

    assert info.value.reason == "KMSIntegrityError" and version in str(info.value)
    assert info.value.attempts == 3
    assert kms_counters.count("AsymmetricSign", version) == 3
    assert seen[-1].outcome == "KMSIntegrityError"
    assert seen[-1].attempt_codes == ("INTEGRITY",) * 3

    kms_faults.reset()
    assert kms_runner.run(signer.sign(b"tbs"))  # recovers once the wire is clean


def test_wrong_resource_name_is_not_retried(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(version)
    kms_faults.wrong_response_name = True
    with pytest.raises(KmsIntegrityError, match="cryptoKeyVersions/1001"):
        kms_runner.run(signer.sign(b"tbs"))
    assert kms_counters.count("AsymmetricSign", version) == 1


def test_corrupt_public_key_crc_is_detected(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.signer(version, retry=RetryPolicy(initial_backoff=0.01))
    kms_faults.corrupt_pem_crc = True
    with pytest.raises(KmsIntegrityError, match="PEM failed its CRC32C"):
        kms_runner.run(signer.public_key())
    assert kms_counters.count("GetPublicKey", version) == 3
    with pytest.raises(KmsIntegrityError):  # sign needs the key, so it fails the same way
        kms_runner.run(signer.sign(b"tbs"))

    kms_faults.reset()
    assert kms_runner.run(signer.public_key()).key_version == version  # a failure is not cached

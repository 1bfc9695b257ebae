"""Retries, deadlines, quota, concurrency and rate limits, measured at the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from signet.kms.cloudkms import RetryPolicy, SignObservation
from signet.kms.emulator import Counters, Faults
from signet.kms.errors import KmsQuotaExceeded, KmsUnavailable
from tests.kms_fixtures import KeyFactory, KmsRunner

P256 = "EC_SIGN_P256_SHA256"
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, deadline=10)


async def _sign_many(signer_sign: Callable[[bytes], Awaitable[bytes]], count: int) -> list[bytes]:
    return list(await asyncio.gather(*(signer_sign(i.to_bytes(2, "big")) for i in range(count))))


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
)
def test_transient_errors_are_retried_to_one_success(
    code: grpc.StatusCode,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_faults: Faults,
    kms_counters: Counters,
) -> None:
    version = kms_key_factory(P256)
    seen: list[SignObservation] = []
    signer = kms_runner.warm_signer(version, retry=FAST, observe=seen.append)
    kms_faults.fail_next(3, code)

    assert kms_runner.run(signer.sign(b"tbs"))

    assert kms_counters.count("AsymmetricSign", version, code.name) == 3
    assert kms_counters.count("AsymmetricSign", version, "OK") == 1
    assert seen[-1].attempt_codes == (code.name,) * 3 + ("OK",)
    assert seen[-1].outcome == "OK" and seen[-1].attempts == 4


def test_unavailable_until_deadline_names_the_key_version(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(
        version, retry=RetryPolicy(deadline=1.0, attempt_timeout=0.25, initial_backoff=0.05)
    )
    kms_faults.latency_s = 0.6  # every attempt outlives its 0.25 s timeout

    with pytest.raises(KmsUnavailable) as info:
        kms_runner.run(signer.sign(b"tbs"))

    err = info.value
    assert type(err) is KmsUnavailable and err.reason == "KMSUnavailable"
    assert version in str(err) and "DEADLINE_EXCEEDED" in str(err) and "1s deadline" in str(err)
    assert 2 <= err.attempts <= 4
    assert kms_counters.count("AsymmetricSign", version, "OK") == 0


def test_quota_exhaustion_is_absorbed_by_retries(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(version, retry=FAST)
    kms_faults.sign_qps = 8

    signatures = kms_runner.run(_sign_many(signer.sign, 16))

    assert len(signatures) == 16
    assert kms_counters.count("AsymmetricSign", version, "OK") == 16
    assert kms_counters.count("AsymmetricSign", version, "RESOURCE_EXHAUSTED") > 0


def test_persistent_quota_exhaustion_reports_quota(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(version, retry=RetryPolicy(deadline=0.5, initial_backoff=0.05))
    kms_faults.fail_next(1000, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(KmsQuotaExceeded, match="RESOURCE_EXHAUSTED") as info:
        kms_runner.run(signer.sign(b"tbs"))
    assert info.value.reason == "KMSQuotaExceeded"


def test_quota_stays_the_reason_when_the_deadline_cuts_the_last_attempt(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults
) -> None:
    """Two quota refusals take 0.8 of a 1.2 s budget; the third attempt gets what is left
    (< the 0.4 s the emulator takes) and ends DEADLINE_EXCEEDED on our side. The user must
    still read "quota", the failure that kept us retrying, not "KMS unavailable"."""
    version = kms_key_factory(P256)
    seen: list[SignObservation] = []
    signer = kms_runner.warm_signer(
        version, retry=RetryPolicy(deadline=1.2, initial_backoff=0.05), observe=seen.append
    )
    kms_faults.latency_s = 0.4
    kms_faults.fail_next(1000, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(KmsQuotaExceeded, match="last error RESOURCE_EXHAUSTED") as info:
        kms_runner.run(signer.sign(b"tbs"))
    codes = seen[-1].attempt_codes
    assert codes[-1] == "DEADLINE_EXCEEDED", codes  # else the case under test did not occur
    assert info.value.code == "RESOURCE_EXHAUSTED"


def test_concurrency_bound_is_respected(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    limiter = kms_runner.limiter(max_concurrency=3)
    signer = kms_runner.signer(version, limiter=limiter)
    other = kms_runner.signer(version, limiter=limiter)  # the limiter is shared
    kms_runner.run(signer.public_key())
    kms_runner.run(other.public_key())
    kms_faults.latency_s = 0.05

    async def both() -> None:
        await asyncio.gather(_sign_many(signer.sign, 9), _sign_many(other.sign, 9))

    kms_runner.run(both())
    assert kms_counters.max_in_flight("AsymmetricSign") == 3
    assert kms_counters.count("AsymmetricSign", version, "OK") == 18


def test_rate_limit_is_respected(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_counters: Counters
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(version, limiter=kms_runner.limiter(rate=25, burst=5))

    kms_runner.run(_sign_many(signer.sign, 30))

    arrivals = kms_counters.arrivals("AsymmetricSign")
    assert len(arrivals) == 30
    # 5 may go at once, the remaining 25 are spaced 40 ms apart: >= ~1 s in total.
    assert arrivals[-1] - arrivals[0] >= 0.9
    for i, start in enumerate(arrivals):
        in_window = sum(1 for t in arrivals[i:] if t - start < 0.5)
        assert in_window <= 5 + 0.5 * 25 + 1


def test_one_get_public_key_for_many_concurrent_callers(
    kms_key_factory: KeyFactory, kms_runner: KmsRunner, kms_faults: Faults, kms_counters: Counters
) -> None:
    version = kms_key_factory("EC_SIGN_P384_SHA384")
    signer = kms_runner.signer(version)
    kms_faults.latency_s = 0.05  # keep the first fetch in flight while the others arrive
    kms_faults.methods = frozenset({"GetPublicKey"})

    async def many() -> None:
        keys = await asyncio.gather(*(signer.public_key() for _ in range(25)))
        assert len({id(k) for k in keys}) == 1
        await _sign_many(signer.sign, 10)

    kms_runner.run(many())
    assert kms_counters.count("GetPublicKey", version) == 1
    assert kms_counters.count("AsymmetricSign", version) == 10


def test_limiter_deadline_fails_fast(kms_runner: KmsRunner, kms_key_factory: KeyFactory) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.signer(
        version, limiter=kms_runner.limiter(rate=1), retry=RetryPolicy(deadline=0.5)
    )
    kms_runner.run(signer.sign(b"first"))  # takes the only token this second
    with pytest.raises(KmsUnavailable, match="rate limit"):
        kms_runner.run(signer.sign(b"second"))

"""Cloud KMS misbehaving under a batch: outage, quota, latency, disabled and destroyed keys.

Each test drives the real operator against the emulator and checks the same promises: the
operator stays up, a failing Certificate says why (Ready=False with the KMS reason) and when
it will retry, a Secret that was valid before the fault is never touched by a failed
attempt, and everything converges within the backoff once KMS is back.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.cloud import kms_v1

from signet.kms.emulator import Counters, Faults
from tests.kube import Kube
from tests.operator.harness import (
    OperatorProcess,
    condition,
    issuer_manifest,
)
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import (
    KMS_DEADLINE_S,
    RETRY_BASE_S,
    RETRY_CAP_S,
    WORKERS,
    KeyFactory,
    Obj,
    assert_secrets_consistent,
    audit_counts,
    create_certificates,
    fresh_issuer,
    list_certificates,
    poll,
    request_renewal,
    retry_gap,
    secret_snapshot,
    wait_all,
)

pytestmark = pytest.mark.cluster

SETTLE_S = 15.0
"""Slack for queue processing on two busy cores, on top of the computed backoff bound."""


def _failing(obj: Obj, reason: str) -> bool:
    status = obj.get("status") or {}
    return (
        condition(obj, "Ready").get("reason") == reason
        and int(status.get("failedIssuanceAttempts") or 0) >= 1
        and bool(status.get("nextRetryTime"))
        and bool(status.get("lastFailureTime"))
    )


def _set_state(admin: kms_v1.KeyManagementServiceClient, version: str, state: str) -> None:
    admin.update_crypto_key_version(
        request={
            "crypto_key_version": {
                "name": version,
                "state": kms_v1.CryptoKeyVersion.CryptoKeyVersionState[state],
            },
            "update_mask": {"paths": ["state"]},
        }
    )


@pytest.mark.parametrize(
    ("count", "outage_s"),
    [
        pytest.param(60, 15.0, id="60certs-15s"),
        pytest.param(
            200, 60.0, id="200certs-60s", marks=[pytest.mark.slow, pytest.mark.timeout(900)]
        ),
    ],
)
def test_kms_outage_mid_batch(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_faults: Faults,
    kms_counters: Counters,
    record: Recorder,
    count: int,
    outage_s: float,
) -> None:
    key_version = fresh_issuer(crds, namespace, kms_key_factory)
    names = [f"c{i:03d}" for i in range(count)]
    before, during = names[: count // 2], names[count // 2 :]
    renewed = before[:10]
    create_certificates(crds, namespace, "ca", before)
    wait_all(crds, namespace, before, timeout=60 + count)
    valid = secret_snapshot(crds, namespace)
    signs_before = kms_counters.count("AsymmetricSign", key_version, "OK")
    time.sleep(1.1)  # renewal requests must be later than the issued-at second

    kms_faults.error_code = grpc.StatusCode.UNAVAILABLE
    kms_faults.error_rate = 1.0
    outage_start = time.monotonic()
    for name in renewed:
        request_renewal(crds, namespace, name)
    create_certificates(crds, namespace, "ca", during)

    # Every attempt now takes the whole KMS deadline, and the workers take them in rounds.
    failing_ones = [*during, *renewed]
    rounds = -(-len(failing_ones) // WORKERS)
    failing = wait_all(
        crds,
        namespace,
        failing_ones,
        status="False",
        reason="KMSUnavailable",
        timeout=max(outage_s, rounds * KMS_DEADLINE_S + SETTLE_S),
        where=lambda obj: _failing(obj, "KMSUnavailable"),
    )
    for name in renewed:
        assert (
            "the current certificate stays valid until"
            in (condition(failing[name], "Ready")["message"])
        )
    # Ride out the outage, watching that nothing valid is touched, until it has lasted
    # outage_s and the backoff has shown: a Certificate whose first retry (due RETRY_BASE_S
    # after its first failure, over within the KMS deadline) failed too, and now waits
    # twice as long. Every Certificate has failed once by now, so that is the bound.
    attempts, gaps = [0], [0.0]

    def backoff_shown() -> bool:
        assert signet_operator.process is not None and signet_operator.process.poll() is None
        assert secret_snapshot(crds, namespace) == valid, "a failed attempt changed a Secret"
        certs = list_certificates(crds, namespace)
        for name in failing_ones:
            status = certs[name].get("status") or {}
            if status.get("nextRetryTime"):
                attempts.append(int(status["failedIssuanceAttempts"]))
                gaps.append(retry_gap(certs[name]))
        return (
            time.monotonic() >= outage_start + outage_s and max(attempts) >= 2 and max(gaps) > 2.0
        )

    limit = max(
        time.monotonic() + RETRY_BASE_S + KMS_DEADLINE_S + SETTLE_S, outage_start + outage_s
    )
    while not backoff_shown():
        assert time.monotonic() < limit, (
            f"backoff not visible: up to {max(attempts)} attempts, gaps {sorted(set(gaps))}"
        )
        time.sleep(1)  # the polling interval: the loop ends on the state, not on a time
    assert kms_counters.count("AsymmetricSign", key_version, "OK") == signs_before
    assert kms_counters.count("AsymmetricSign", key_version, "UNAVAILABLE") > 0
    assert max(attempts) >= 2, "backoff not visible: no Certificate retried during the outage"
    assert max(gaps) > 2.0, f"backoff did not grow: {sorted(set(gaps))}"
    assert max(gaps) <= RETRY_CAP_S

    kms_faults.reset()
    recovery_start = time.monotonic()
    bound = min(max(gaps), RETRY_CAP_S) + KMS_DEADLINE_S + SETTLE_S
    done = wait_all(crds, namespace, names, timeout=bound + count / 4)
    recovery = time.monotonic() - recovery_start

    secrets = assert_secrets_consistent(crds, namespace, done)
    for name in before:
        if name in renewed:
            assert secrets[f"{name}-identity"].serial != valid[f"{name}-identity"].serial
        else:
            assert secrets[f"{name}-identity"] == valid[f"{name}-identity"], name
    issued = len(during) + len(renewed)
    signs = kms_counters.count("AsymmetricSign", key_version, "OK") - signs_before
    audits = audit_counts([signet_operator], namespace)
    assert {n: audits[n] for n in during} == dict.fromkeys(during, 1)
    assert {n: audits[n] for n in renewed} == dict.fromkeys(renewed, 2)
    assert signs == issued, f"{signs} signatures for {issued} issuances"
    assert recovery <= bound + count / 4, f"recovered in {recovery:.1f}s, bound {bound:.1f}s"
    record(
        f"KMS UNAVAILABLE {outage_s:.0f}s during a batch of {count}",
        f"Ready=False KMSUnavailable, up to {max(attempts)} attempts, backoff up to "
        f"{max(gaps):.0f}s; {len(valid)} valid Secrets untouched; all Ready after",
        recovery,
        signatures=signs,
        issuances=issued,
    )


def test_kms_quota_exhausted(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_faults: Faults,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    key_version = fresh_issuer(crds, namespace, kms_key_factory)
    names = [f"q{i:02d}" for i in range(16)]
    signs_before = kms_counters.count("AsymmetricSign", key_version, "OK")  # the CA bootstrap
    kms_faults.sign_qps = 2
    start = time.monotonic()
    create_certificates(crds, namespace, "ca", names)
    reasons: set[str] = set()

    def all_ready() -> bool:
        certs = list_certificates(crds, namespace)
        reasons.update(
            condition(c, "Ready").get("reason", "") for c in certs.values() if c.get("status")
        )
        return all(
            n in certs and condition(certs[n], "Ready").get("status") == "True" for n in names
        )

    poll(all_ready, timeout=90, interval=0.5, what="every Certificate Ready under quota")
    elapsed = time.monotonic() - start
    done = wait_all(crds, namespace, names, timeout=5)
    assert_secrets_consistent(crds, namespace, done)
    exhausted = kms_counters.count("AsymmetricSign", key_version, "RESOURCE_EXHAUSTED")
    assert exhausted > 0, "the quota was never hit: the test did not test anything"
    signs = kms_counters.count("AsymmetricSign", key_version, "OK") - signs_before
    assert signs == len(names)
    assert signet_operator.process is not None and signet_operator.process.poll() is None
    assert reasons <= {"Ready", "KMSQuotaExceeded"}, reasons
    record(
        "KMS quota 2 signs/s, batch of 16",
        f"{exhausted} RESOURCE_EXHAUSTED absorbed; reasons seen {sorted(reasons)}; all Ready",
        elapsed,
    )


def test_kms_latency_500ms(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_faults: Faults,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    key_version = fresh_issuer(crds, namespace, kms_key_factory)
    names = [f"l{i:02d}" for i in range(16)]
    kms_counters.reset()  # forget the CA bootstrap signature
    kms_faults.latency_s = 0.5
    start = time.monotonic()
    create_certificates(crds, namespace, "ca", names)
    done = wait_all(crds, namespace, names, timeout=60)
    elapsed = time.monotonic() - start
    assert_secrets_consistent(crds, namespace, done)
    assert all("failedIssuanceAttempts" not in c["status"] for c in done.values())
    assert kms_counters.count("AsymmetricSign", key_version) == len(names)  # no failures
    in_flight = kms_counters.max_in_flight("AsymmetricSign")
    assert in_flight >= 4, f"signatures were serialised ({in_flight} in flight at most)"
    record(
        "KMS latency 500 ms, batch of 16",
        f"no failures, up to {in_flight} signatures in flight",
        elapsed,
    )


def test_an_issuer_applied_with_its_certificates_while_kms_is_slow(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_faults: Faults,
    record: Recorder,
) -> None:
    """An Issuer and its Certificates applied together, KMS taking a second over the
    Issuer's public key: the Certificates wait for the Issuer to resolve. They are not
    failed as if it did not exist (no IssuerNotFound Event, no failed attempt)."""
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    names = [f"w{i}" for i in range(8)]
    kms_faults.methods = frozenset({"GetPublicKey"})
    kms_faults.latency_s = 1.0
    start = time.monotonic()
    crds.apply(issuer_manifest("ca", key_version, namespace=namespace))
    create_certificates(crds, namespace, "ca", names)
    done = wait_all(crds, namespace, names, timeout=60)
    elapsed = time.monotonic() - start
    assert all("failedIssuanceAttempts" not in c["status"] for c in done.values())
    # An IssuerNotFound Event is posted right after the status it describes, seconds
    # before the retry that would make the Certificate Ready: by now it would be listed.
    events = crds.core.list_namespaced_event(namespace).items
    assert [e.reason for e in events if e.type == "Warning"] == []
    record(
        "Issuer and 8 Certificates applied together, GetPublicKey 1 s slow",
        "all Ready at the first attempt; 0 Warning Events (no IssuerNotFound)",
        elapsed,
    )


def test_key_version_disabled_then_enabled(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_admin: kms_v1.KeyManagementServiceClient,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    key_version = fresh_issuer(crds, namespace, kms_key_factory)
    old = ["d0", "d1", "d2"]
    create_certificates(crds, namespace, "ca", old)
    wait_all(crds, namespace, old)
    valid = secret_snapshot(crds, namespace)
    time.sleep(1.1)
    _set_state(kms_admin, key_version, "DISABLED")
    try:
        request_renewal(crds, namespace, "d0")
        create_certificates(crds, namespace, "ca", ["n0", "n1"])
        failing = wait_all(
            crds,
            namespace,
            ["d0", "n0", "n1"],
            status="False",
            reason="KMSKeyDisabled",
            timeout=30,
            where=lambda obj: _failing(obj, "KMSKeyDisabled"),
        )
        assert key_version in condition(failing["n0"], "Ready")["message"]
        time.sleep(4)
        assert secret_snapshot(crds, namespace) == valid
        gap = max(
            retry_gap(c)
            for c in list_certificates(crds, namespace).values()
            if "nextRetryTime" in c.get("status", {})
        )
    finally:
        _set_state(kms_admin, key_version, "ENABLED")
    start = time.monotonic()
    bound = gap + KMS_DEADLINE_S + SETTLE_S
    done = wait_all(crds, namespace, [*old, "n0", "n1"], timeout=bound)
    recovery = time.monotonic() - start
    secrets = assert_secrets_consistent(crds, namespace, done)
    assert secrets["d0-identity"].serial != valid["d0-identity"].serial
    assert secrets["d1-identity"] == valid["d1-identity"]
    assert kms_counters.count("AsymmetricSign", key_version, "FAILED_PRECONDITION") > 0
    record(
        "KMS key version DISABLED then ENABLED",
        "Ready=False KMSKeyDisabled naming the version; valid Secrets untouched; all Ready after",
        recovery,
    )


def test_key_version_destroyed(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_admin: kms_v1.KeyManagementServiceClient,
    record: Recorder,
) -> None:
    key_version = fresh_issuer(crds, namespace, kms_key_factory)
    create_certificates(crds, namespace, "ca", ["old"])
    wait_all(crds, namespace, ["old"])
    valid = secret_snapshot(crds, namespace)
    kms_admin.destroy_crypto_key_version(request={"name": key_version})
    try:
        create_certificates(crds, namespace, "ca", ["new"])
        failing = wait_all(
            crds,
            namespace,
            ["new"],
            status="False",
            reason="KMSKeyDisabled",
            timeout=30,
            where=lambda obj: int(obj["status"].get("failedIssuanceAttempts") or 0) >= 3,
        )
        message = condition(failing["new"], "Ready")["message"]
        assert key_version in message and "DESTROY_SCHEDULED" in message, message
        assert 4 <= retry_gap(failing["new"]) <= RETRY_CAP_S
        assert signet_operator.process is not None and signet_operator.process.poll() is None
        assert secret_snapshot(crds, namespace) == valid
        assert "new-identity" not in secret_snapshot(crds, namespace)
        gap = retry_gap(failing["new"])
    finally:
        kms_admin.restore_crypto_key_version(request={"name": key_version})
        _set_state(kms_admin, key_version, "ENABLED")
    start = time.monotonic()
    done = wait_all(crds, namespace, ["old", "new"], timeout=gap + KMS_DEADLINE_S + SETTLE_S)
    recovery = time.monotonic() - start
    assert_secrets_consistent(crds, namespace, done)
    record(
        "KMS key version destroyed (DESTROY_SCHEDULED), later restored",
        "new Certificate Ready=False KMSKeyDisabled with backoff; old Secret untouched",
        recovery,
    )

"""The Kubernetes API failing under the operator, request by request, through a fault proxy
in front of the real apiserver: 5xx answers, 429 with Retry-After, connections reset before
and after the apiserver acted. Whatever fails, each Certificate costs exactly one KMS
signature, and each KMS signature has exactly one audit record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from signet.kms.emulator import Counters, EmulatorServer
from tests.faultproxy import WRITES, FaultProxy, Seen
from tests.kube import Kube
from tests.operator.harness import OperatorProcess
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import (
    KeyFactory,
    assert_secrets_consistent,
    assert_signatures_accounted,
    audit_counts,
    create_certificates,
    fresh_issuer,
    wait_all,
)

pytestmark = pytest.mark.cluster

BATCH = 200
SECRETS = "/api/v1/namespaces/*/secrets/**"
STATUS = "/apis/signet.dev/v1alpha1/namespaces/*/certificates/*/status"

Fault = Callable[[FaultProxy], Any]

FAULTS: dict[str, tuple[str, Fault]] = {
    "secret-writes-503": (
        "503 on 60% of Secret writes (about 8% run out of client retries)",
        lambda p: p.fail(WRITES, SECRETS, status=503, times=None, probability=0.6, watch=False),
    ),
    "secret-writes-reset-after-apply": (
        "connection reset after the apiserver applied 20% of Secret writes (answer lost)",
        lambda p: p.reset(WRITES, SECRETS, times=None, probability=0.2, forwarded=True),
    ),
    "writes-429": (
        "429 Retry-After: 1 on 30% of all writes",
        lambda p: p.fail(WRITES, "/**", status=429, retry_after=1, times=None, probability=0.3),
    ),
    "status-500-and-resets": (
        "500 on 30% of status patches, resets before forwarding on 10% of Secret writes",
        lambda p: (
            p.fail("PATCH", STATUS, status=500, times=None, probability=0.3),
            p.reset(WRITES, SECRETS, times=None, probability=0.1),
        ),
    ),
}


@pytest.fixture
def proxied_operator(
    crds: Kube,
    kms_emulator: EmulatorServer,
    signet_operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OperatorProcess, FaultProxy]]:
    """The operator talking to the apiserver only through a fault proxy (the session
    operator stands down meanwhile, so one operator acts)."""
    signet_operator.stop()
    try:
        with FaultProxy(crds.kubeconfig, seed=12) as proxy:
            operator = OperatorProcess(
                proxy.kubeconfig, kms_emulator.address, tmp_path_factory.mktemp("proxied")
            )
            operator.start()
            try:
                yield operator, proxy
            finally:
                operator.stop()
    finally:
        signet_operator.start()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_api_faults_cost_no_second_signature(
    crds: Kube,
    namespace: str,
    proxied_operator: tuple[OperatorProcess, FaultProxy],
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    record: Recorder,
    fault: str,
) -> None:
    operator, proxy = proxied_operator
    description, inject = FAULTS[fault]
    key_version = fresh_issuer(crds, namespace, kms_key_factory, timeout=60)
    names = [f"p{i:03d}" for i in range(BATCH)]
    injected_rules = inject(proxy)
    rules = injected_rules if isinstance(injected_rules, tuple) else (injected_rules,)
    start = time.monotonic()
    create_certificates(crds, namespace, "ca", names)
    done = wait_all(crds, namespace, names, timeout=240)
    converged = time.monotonic() - start
    injected = sum(rule.fired for rule in rules)
    proxy.clear()
    assert_secrets_consistent(crds, namespace, done)
    assert {n: done[n]["status"]["revision"] for n in names} == dict.fromkeys(names, 1)
    per_certificate = audit_counts([operator], namespace)
    assert {n: per_certificate[n] for n in names} == dict.fromkeys(names, 1)
    signatures = kms_counters.count("AsymmetricSign", key_version, "OK")
    assert signatures == BATCH + 1  # the CA bootstrap, then one per Certificate
    kms_log = kms_emulator.audit.path
    assert kms_log is not None
    audited = assert_signatures_accounted([operator], kms_log, key_version)
    assert audited == signatures
    assert injected > 0, "the fault never fired"
    rewritten = sum(
        1 for r in operator.audit_records("signet.dev/delivery") if r["outcome"] == "write-failed"
    )
    if fault == "secret-writes-503":
        assert rewritten > 0, "no write ran out of retries: the kept-certificate path went untested"
    record(
        f"{description} ({BATCH} Certificates)",
        f"{injected} faults injected; {rewritten} signed certificates written on a later pass; "
        f"all Ready; KMS signatures = audit records = {audited}; signatures per certificate = 1",
        converged,
        signatures=signatures,
    )


def test_a_listing_whose_snapshot_expired_is_listed_again(
    crds: Kube,
    namespace: str,
    proxied_operator: tuple[OperatorProcess, FaultProxy],
    kms_key_factory: KeyFactory,
) -> None:
    """A continue token outlived by its listing (the apiserver compacted the snapshot away,
    as it did under a cold start over 100,000 Certificates) answers 410 Gone. Signet's
    informer lists again from the start, as client-go's reflector does, and goes on."""
    operator, proxy = proxied_operator
    fresh_issuer(crds, namespace, kms_key_factory, timeout=60)
    names = [f"l{i:03d}" for i in range(120)]  # more than two list pages of 50
    create_certificates(crds, namespace, "ca", names)
    wait_all(crds, namespace, names, timeout=120)
    operator.stop()
    proxy.clear()

    def certificate_list(seen: Seen) -> bool:
        return seen.path.endswith("/certificates")

    expired = proxy.fail(
        "GET",
        "/apis/signet.dev/**",
        status=410,
        watch=False,
        where=lambda seen: certificate_list(seen) and "continue=" in seen.query,
    )
    operator.start()
    create_certificates(crds, namespace, "ca", ["after"])
    wait_all(crds, namespace, ["after"], timeout=90)
    operator.check_alive()
    assert expired.fired == 1
    first_pages = [
        seen
        for seen in proxy.requests("GET", "/apis/signet.dev/**", watch=False)
        if certificate_list(seen) and "continue=" not in seen.query
    ]
    assert len(first_pages) >= 2, "the listing was not started again"
    log = operator.log.read_text()
    assert "the listing of certificates cluster-wide outlived its continue token" in log
    assert "IssuerNotFound" not in log, "a Certificate was looked at before its issuer was known"
    signed = Counter(r["certificate"]["name"] for r in operator.audit_records())
    assert {name: signed[name] for name in [*names, "after"]} == dict.fromkeys([*names, "after"], 1)

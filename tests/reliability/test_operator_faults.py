"""The operator itself failing: SIGKILL mid-batch, and two replicas at once with peering.

Both leave the session operator running when they end (stopped, it would starve every
later test)."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from signet.kms.emulator import Counters, EmulatorServer
from tests.kube import Kube
from tests.operator.harness import OperatorProcess
from tests.reliability.batch import begin_batch
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import (
    KeyFactory,
    assert_secrets_consistent,
    audit_counts,
    create_certificates,
    fresh_issuer,
    issued_count,
    poll,
    signet_cli,
    wait_all,
)

pytestmark = pytest.mark.cluster

MAX_IN_FLIGHT = 32


def test_sigkill_mid_batch_then_restart(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    rsa = {"algorithm": "RSA", "size": 2048}
    batch = begin_batch(crds, namespace, kms_key_factory, kms_counters, "k", 40, privateKey=rsa)
    names, key_version = batch.names, batch.key_version
    poll(lambda: issued_count(crds, namespace) >= 5, timeout=60, what="first issuances")
    try:
        signet_operator.stop(signal.SIGKILL)
        issued_at_kill = issued_count(crds, namespace)
    finally:
        start = time.monotonic()
        signet_operator.start()
    done = wait_all(crds, namespace, names, timeout=120)
    recovery = time.monotonic() - start
    assert_secrets_consistent(crds, namespace, done)
    assert {n: done[n]["status"]["revision"] for n in names} == dict.fromkeys(names, 1)
    # A signature's record is written the moment its answer reaches the operator, before the
    # certificate can leave the process. What a kill can cost: a certificate signed but not
    # yet written (kept in memory only: it holds a private key), signed again after the
    # restart, both on the trail; and, when the kill lands between KMS answering and the
    # operator seeing the answer, a signature only KMS's log has. `signet audit reconcile`
    # exists to find exactly those: each must be reported, and no more.
    audits = audit_counts([signet_operator], namespace)
    assert all(audits[n] >= 1 for n in names), audits
    signs = batch.signatures()
    assert len(names) <= signs <= len(names) + MAX_IN_FLIGHT
    recorded = sum(audits[n] for n in names)
    assert kms_emulator.audit.path is not None
    verify = signet_cli("audit", "verify", str(signet_operator.audit_log))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    result = signet_cli(
        "audit",
        "reconcile",
        "--json",
        f"--kms-log={kms_emulator.audit.path}",
        f"--key-prefix={key_version}",
        str(signet_operator.audit_log),
    )
    report = json.loads(result.stdout)
    unrecorded = len(report["unrecorded"])
    assert report["unsigned"] == [] and recorded + unrecorded == signs, report
    assert result.returncode == (1 if unrecorded else 0)
    assert unrecorded <= MAX_IN_FLIGHT
    record(
        "operator SIGKILL mid-batch (40 RSA Certificates), restarted",
        f"{issued_at_kill} issued before the kill; rest issued after restart; "
        f"{signs - len(names)} signed but unwritten at the kill, signed again; "
        f"{unrecorded} answered by KMS as the kill landed (reported by signet audit "
        "reconcile); every other KMS signature has its record; no Certificate re-issued",
        recovery,
        signatures=signs,
    )


def _peering(kube: Kube, name: str, *, delete: bool = False) -> None:
    if delete:
        try:
            kube.custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
        return
    kube.custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}},
    )


def _peers(kube: Kube, name: str) -> dict[str, Any]:
    obj = kube.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
    return dict(obj.get("status") or {})


def test_two_peered_operators_only_one_acts(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    tmp_path_factory: pytest.TempPathFactory,
    record: Recorder,
) -> None:
    """Two replicas with ``--peering NAME`` (the ClusterKopfPeering created as kopf's docs
    and the chart's NOTES describe): one issues, the other stands by; when the active one
    shuts down, the standby takes over."""
    crds.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev")
    peering = f"signet-rel-{uuid.uuid4().hex[:6]}"
    replicas = [
        OperatorProcess(
            crds.kubeconfig,
            kms_emulator.address,
            Path(tmp_path_factory.mktemp(f"replica-{index}")),
            extra_args=[f"--peering={peering}"],
        )
        for index in range(2)
    ]
    signet_operator.stop()
    try:
        _peering(crds, peering)
        for replica in replicas:
            replica.start()
        poll(lambda: len(_peers(crds, peering)) == 2, timeout=30, what="both replicas peered")
        start = time.monotonic()
        try:
            fresh_issuer(crds, namespace, kms_key_factory, timeout=30)
        except AssertionError as error:
            paused = [
                line[:200]
                for replica in replicas
                for line in replica.log.read_text().splitlines()
                if "Pausing" in line
            ]
            raise AssertionError(
                f"no replica acted within 30s ({error}); kopf pause lines: {paused}"
            ) from None
        names = [f"p{i:02d}" for i in range(20)]
        create_certificates(crds, namespace, "ca", names)
        done = wait_all(crds, namespace, names, timeout=60)
        converged = time.monotonic() - start
        assert_secrets_consistent(crds, namespace, done)
        per_replica = [sum(audit_counts([r], namespace).values()) for r in replicas]
        assert sorted(per_replica) == [0, len(names)], f"audit records per replica {per_replica}"
        active = replicas[per_replica.index(len(names))]
        standby = replicas[1 - replicas.index(active)]

        active.stop(signal.SIGTERM)  # graceful: it leaves the peering at once
        takeover_start = time.monotonic()
        create_certificates(crds, namespace, "ca", ["after-failover"])
        wait_all(crds, namespace, ["after-failover"], timeout=60)
        takeover = time.monotonic() - takeover_start
        assert audit_counts([standby], namespace)["after-failover"] == 1
        assert audit_counts([active], namespace)["after-failover"] == 0
    finally:
        for replica in replicas:
            replica.stop()
        _peering(crds, peering, delete=True)
        signet_operator.start()
    record(
        "two operator replicas with --peering",
        f"one replica issued all {len(names)}, the other none; standby took over after SIGTERM",
        takeover,
        first_batch_s=round(converged, 1),
    )

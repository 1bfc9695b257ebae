"""Three replicas with ``--shards auto`` on the real apiserver: each Certificate is signed
by exactly one replica, the one rendezvous hashing over the live members names; a replica
killed outright has its share taken over within the lease duration; one started again
takes back only its own share.

The session operator is stopped meanwhile (it would sign everything) and started again at
the end, as the peering test does.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from signet.decisions.shards import Timing, owner, shard_key
from signet.kms.emulator import EmulatorServer
from tests.faultproxy import FaultProxy
from tests.kube import Kube
from tests.operator.harness import OperatorProcess
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import (
    KeyFactory,
    create_certificates,
    fresh_issuer,
    list_certificates,
    metric,
    poll,
    wait_all,
)

pytestmark = pytest.mark.cluster

LEASE_SECONDS = 15.0
"""The default: the test shows the default's promise."""


def _signers(replicas: dict[str, OperatorProcess], namespace: str) -> dict[str, list[str]]:
    """Certificate name -> the replicas whose audit file holds a signature for it."""
    signed: dict[str, list[str]] = {}
    for member, replica in replicas.items():
        for record in replica.audit_records():
            if record["certificate"]["namespace"] == namespace:
                signed.setdefault(record["certificate"]["name"], []).append(member)
    return signed


def _owners(namespace: str, names: list[str], members: list[str]) -> dict[str, str | None]:
    return {n: owner(shard_key("Certificate", namespace, n), members) for n in names}


def _members_seen(replica: OperatorProcess) -> float:
    return metric(replica.metrics(), "signet_shard_members")


def test_three_sharded_replicas_sign_each_certificate_once(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    tmp_path_factory: pytest.TempPathFactory,
    record: Recorder,
) -> None:
    members = ["replica-0", "replica-1", "replica-2"]
    replicas = {
        member: OperatorProcess(
            crds.kubeconfig,
            kms_emulator.address,
            Path(tmp_path_factory.mktemp(member)),
            extra_args=[
                "--shards=auto",
                f"--shard-lease-seconds={LEASE_SECONDS:g}",
                f"--namespace={namespace}",
                f"--operator-namespace={namespace}",
            ],
            env={"POD_NAME": member},
        )
        for member in members
    }
    signet_operator.stop()
    try:
        for replica in replicas.values():
            replica.start()
        poll(
            lambda: all(_members_seen(r) == 3 for r in replicas.values()),
            timeout=30,
            what="every replica sees three members",
        )
        fresh_issuer(crds, namespace, kms_key_factory, timeout=60)

        # 300 Certificates: each signed once, by the replica that owns it.
        first = [f"s{i:03d}" for i in range(300)]
        start = time.monotonic()
        create_certificates(crds, namespace, "ca", first)
        wait_all(crds, namespace, first, timeout=150)
        batch_seconds = time.monotonic() - start
        signed = _signers(replicas, namespace)
        owners = _owners(namespace, first, members)
        assert {n: signed.get(n) for n in first} == {n: [owners[n]] for n in first}
        per_replica = Counter(m for n in first for m in signed[n])
        bootstraps = [
            r["issuer"]
            for replica in replicas.values()
            for r in replica.audit_all()
            if r.get("purpose") == "ca-bootstrap"
        ]
        assert len(bootstraps) == 1, f"the issuer's CA was bootstrapped {len(bootstraps)} times"
        assert sum(per_replica.values()) == len(first)
        assert all(per_replica[m] > 0 for m in members), per_replica

        # SIGKILL one: its lease is not released, so the others take over once it runs out.
        killed = "replica-1"
        survivors = [m for m in members if m != killed]
        replicas[killed].stop(signal.SIGKILL)
        killed_at = time.monotonic()
        second = [f"k{i:03d}" for i in range(60)]
        create_certificates(crds, namespace, "ca", second)
        poll(
            lambda: all(_members_seen(replicas[m]) == 2 for m in survivors),
            timeout=LEASE_SECONDS + 15,
            interval=0.2,
            what="the survivors drop the killed replica",
        )
        takeover = time.monotonic() - killed_at
        wait_all(crds, namespace, second, timeout=90)
        all_done = time.monotonic() - killed_at
        # Within the lease duration of its last renewal, which came before the kill; the
        # margin is the survivors' next look and this poll, on a busy machine.
        assert takeover <= LEASE_SECONDS + 5, f"share taken over after {takeover:.1f}s"
        signed = _signers(replicas, namespace)
        owners_now = _owners(namespace, second, survivors)
        assert {n: signed.get(n) for n in second} == {n: [owners_now[n]] for n in second}
        orphaned = sum(
            1 for n in second if owner(shard_key("Certificate", namespace, n), members) == killed
        )
        assert orphaned > 0  # the killed replica's share of the batch was signed by others

        # Start it again under the same name: it takes back only its share, and nothing
        # already issued is signed again.
        replicas[killed].start()
        poll(
            lambda: all(_members_seen(r) == 3 for r in replicas.values()),
            timeout=30,
            what="three members again",
        )
        everything = sorted(list_certificates(crds, namespace))
        before, after = (
            _owners(namespace, everything, survivors),
            _owners(namespace, everything, members),
        )
        moved = [n for n in everything if before[n] != after[n]]
        assert moved and all(after[n] == killed for n in moved)
        poll(
            lambda: metric(replicas[killed].metrics(), "signet_shard_owned") == len(moved),
            timeout=30,
            what="the returning replica owns exactly its share",
        )
        third = [f"r{i:03d}" for i in range(30)]
        create_certificates(crds, namespace, "ca", third)
        wait_all(crds, namespace, third, timeout=60)
        signed = _signers(replicas, namespace)
        owners_back = _owners(namespace, third, members)
        assert {n: signed.get(n) for n in third} == {n: [owners_back[n]] for n in third}
        total = sum(len(v) for v in signed.values())
        assert total == len(first) + len(second) + len(third), "a Certificate signed twice"

        # A clean shutdown gives the Lease up: the others take over at once.
        replicas[killed].stop()
        stopped_at = time.monotonic()
        poll(
            lambda: all(_members_seen(replicas[m]) == 2 for m in survivors),
            timeout=10,
            interval=0.1,
            what="the survivors drop the stopped replica",
        )
        handover = time.monotonic() - stopped_at
        assert handover < LEASE_SECONDS / 3, f"a clean shutdown handed over after {handover:.1f}s"
    finally:
        for replica in replicas.values():
            replica.stop()
        signet_operator.start()
    record(
        "three sharded replicas (--shards auto), one SIGKILLed and started again",
        f"{len(first)} Certificates in {batch_seconds:.1f}s, each signed once by its owner "
        f"({dict(per_replica)}); killed replica's share taken over in {takeover:.1f}s "
        f"(lease {LEASE_SECONDS:g}s), its {orphaned} of {len(second)} new ones issued by the "
        f"others within {all_done:.1f}s; on its return {len(moved)} of {len(everything)} "
        f"moved back, all to it; 0 duplicate signatures; a clean shutdown handed over in "
        f"{handover:.1f}s",
        takeover,
        signatures=total,
    )


def test_a_replica_cut_off_from_the_apiserver_stops_acting_before_it_is_replaced(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    tmp_path_factory: pytest.TempPathFactory,
    record: Recorder,
) -> None:
    """Fencing: one of two replicas reaches the apiserver through a proxy that freezes.
    It must own nothing (its renew deadline passed) before the other sees its Lease run
    out and takes its share; once the proxy thaws it rejoins, and no Certificate is ever
    signed twice."""
    timing = Timing(9)
    flags = [f"--shard-lease-seconds={timing.lease_seconds:g}", f"--namespace={namespace}"]
    flags.append(f"--operator-namespace={namespace}")
    signet_operator.stop()
    try:
        with FaultProxy(crds.kubeconfig, seed=7) as proxy:
            direct, cut = (
                OperatorProcess(
                    kubeconfig,
                    kms_emulator.address,
                    Path(tmp_path_factory.mktemp(member)),
                    extra_args=["--shards=auto", *flags],
                    env={"POD_NAME": member},
                )
                for member, kubeconfig in (
                    ("direct", crds.kubeconfig),
                    ("cut", proxy.kubeconfig),
                )
            )
            replicas = {"direct": direct, "cut": cut}
            try:
                for replica in replicas.values():
                    replica.start()
                poll(
                    lambda: all(_members_seen(r) == 2 for r in replicas.values()),
                    timeout=30,
                    what="both replicas see two members",
                )
                fresh_issuer(crds, namespace, kms_key_factory, timeout=60)
                before = [f"b{i:02d}" for i in range(40)]
                create_certificates(crds, namespace, "ca", before)
                wait_all(crds, namespace, before, timeout=60)
                poll(
                    lambda: metric(cut.metrics(), "signet_shard_owned") > 0,
                    timeout=10,
                    what="the replica to be cut off owns a share",
                )

                proxy.pause()
                paused_at = time.monotonic()
                poll(
                    lambda: metric(cut.metrics(), "signet_shard_owned") == 0,
                    timeout=timing.lease_seconds,
                    interval=0.1,
                    what="the cut-off replica fences itself",
                )
                fenced = time.monotonic() - paused_at
                poll(
                    lambda: _members_seen(direct) == 1,
                    timeout=timing.lease_seconds + 5,
                    interval=0.1,
                    what="the other replica drops it",
                )
                replaced = time.monotonic() - paused_at
                assert fenced < replaced, (fenced, replaced)
                assert fenced <= timing.renew_deadline + 2  # + a scrape on a busy machine
                during = [f"d{i:02d}" for i in range(20)]
                create_certificates(crds, namespace, "ca", during)
                wait_all(crds, namespace, during, timeout=60)

                proxy.resume()
                poll(
                    lambda: all(_members_seen(r) == 2 for r in replicas.values()),
                    timeout=30,
                    what="the cut-off replica rejoins",
                )
                after = [f"a{i:02d}" for i in range(20)]
                create_certificates(crds, namespace, "ca", after)
                wait_all(crds, namespace, after, timeout=60)
                signed = _signers(replicas, namespace)
            finally:
                for replica in replicas.values():
                    replica.stop()
    finally:
        signet_operator.start()
    assert {n: signed.get(n) for n in during} == {n: ["direct"] for n in during}
    owners = _owners(namespace, after, list(replicas))
    assert {n: signed.get(n) for n in after} == {n: [owners[n]] for n in after}
    assert all(len(signed[n]) == 1 for n in before), "a Certificate signed twice"
    record(
        "sharded replica cut off from the apiserver (proxy frozen), then thawed",
        f"it owned nothing {fenced:.1f}s after the freeze, before its peer dropped it "
        f"({replaced:.1f}s; lease {timing.lease_seconds:g}s, renew deadline "
        f"{timing.renew_deadline:g}s); its peer issued the {len(during)} created meanwhile; "
        "it rejoined with its share; 0 duplicate signatures",
        replaced,
    )

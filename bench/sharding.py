"""Figure ``sharding``: N Certificates issued by 1, 2 and 3 replicas with ``--shards auto``,
and 3 replicas with one SIGKILLed mid-batch.

Each configuration gets a namespace, an Issuer on a KMS key of its own (so the emulator's
count of AsymmetricSign calls on that key is the configuration's alone) and fresh operator
processes, each with its own audit file; the replicas use that namespace as their operator
namespace, so their Leases are theirs alone. Signatures per certificate come from the
emulator (all signatures on the key, less the issuer's one CA bootstrap) and are checked
against the replicas' audit files.

On a 2-core machine the apiserver and etcd share the cores with the replicas: more replicas
add watch streams and CPU as much as capacity, so the figure is about correctness (exactly
one signature per certificate, the takeover time) more than speed.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.figures import _watch
from bench.kube import certificate_body
from bench.procs import SIGN, Operator
from bench.windows import Env, Sizes, wait_quiet
from signet_dev import metrics

REPLICAS = (1, 2, 3)


def _replicas(env: Env, namespace: str, count: int) -> dict[str, Operator]:
    replicas: dict[str, Operator] = {}
    for index in range(count):
        member = f"{namespace}-{index}"
        folder = env.workdir / member
        folder.mkdir(exist_ok=True)
        replicas[member] = Operator(
            env.operator.kubeconfig,
            env.kms.address,
            folder,
            audit=True,
            env={**env.operator.env, "POD_NAME": member},
        )
    return replicas


def _members(replica: Operator) -> float:
    text = replica.metrics_named("signet_shard_members")
    return metrics.value(text, "signet_shard_members")


def _wait(what: str, check: Any, timeout: float, interval: float = 0.2) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g}s")


def _start(env: Env, namespace: str, replicas: dict[str, Operator]) -> None:
    for replica in replicas.values():
        replica.start_for([namespace], extra=["--shards=auto", f"--operator-namespace={namespace}"])
    _wait(
        "every replica sees the others",
        lambda: all(_members(r) == len(replicas) for r in replicas.values()),
        timeout=60,
    )
    # The members act one renew interval after joining (signet.decisions.shards).
    env.kube.wait_issuer_ready(namespace, "ca", timeout=60)


def _records(replica: Operator, namespace: str) -> tuple[list[str], set[str]]:
    """Certificates signed (one name per signature) and those written, per the audit file."""
    signed: list[str] = []
    written: set[str] = set()
    if not replica.audit_log.exists():
        return signed, written
    for line in replica.audit_log.read_text().splitlines():
        record = json.loads(line)
        certificate = record.get("certificate") or {}
        if certificate.get("namespace") != namespace:
            continue
        if record.get("kind") == "signet.dev/signature" and record.get("purpose") == "certificate":
            signed.append(certificate["name"])
        elif record.get("kind") == "signet.dev/delivery" and record.get("outcome") == "written":
            written.add(certificate["name"])
    return signed, written


def _audited(replicas: dict[str, Operator], namespace: str) -> Counter[str]:
    """Certificate signatures per replica, from their audit files."""
    return Counter({m: len(_records(r, namespace)[0]) for m, r in replicas.items()})


def _batch(env: Env, replicas: int, n: int) -> dict[str, Any]:
    namespace, key = f"bench-shards-{replicas}", f"sharding-{replicas}"
    env.kube.ensure_namespace(namespace)
    env.kube.create_issuer(namespace, "ca", env.kms.versions[key])
    members = _replicas(env, namespace, replicas)
    try:
        _start(env, namespace, members)
        names = [f"shard-{i:05d}" for i in range(n)]
        keys = [(namespace, name) for name in names]
        wait_quiet(env)
        with _watch(env, [namespace]) as watch:
            t0 = time.perf_counter()
            env.kube.create_certificates_at_once([certificate_body(namespace, c) for c in names])
            seconds = watch.wait_all(keys, timeout=120 + n * 0.5) - t0
        audited = _audited(members, namespace)
    finally:
        for replica in members.values():
            replica.stop()
    signatures = env.kms.count(SIGN, key=key) - 1  # less the CA bootstrap
    return {
        "replicas": replicas,
        "certificates": n,
        "seconds": round(seconds, 2),
        "per_s": round(n / seconds, 1),
        "signatures_per_certificate": round(signatures / n, 3),
        "audited_per_replica": sorted(audited.values()),
        "audited_total": sum(audited.values()),
    }


def _killed(env: Env, n: int) -> dict[str, Any]:
    """Three replicas; one SIGKILLed once a third of the batch is Ready."""
    namespace, key = "bench-shards-kill", "sharding-kill"
    env.kube.ensure_namespace(namespace)
    env.kube.create_issuer(namespace, "ca", env.kms.versions[key])
    members = _replicas(env, namespace, 3)
    try:
        _start(env, namespace, members)
        names = [f"kill-{i:05d}" for i in range(n)]
        keys = [(namespace, name) for name in names]
        wait_quiet(env)
        with _watch(env, [namespace]) as watch:
            t0 = time.perf_counter()
            env.kube.create_certificates_at_once([certificate_body(namespace, c) for c in names])
            _wait(
                "a third Ready",
                lambda: watch.count_ready(keys) >= n // 3,
                timeout=120,
                interval=0.02,
            )
            victim, *survivors = list(members)
            members[victim].stop(signal.SIGKILL)
            killed_at = time.perf_counter()
            ready_at_kill = watch.count_ready(keys)
            taken_over = _wait(
                "the survivors drop the killed replica",
                lambda: all(_members(members[m]) == 2 for m in survivors),
                timeout=60,
            )
            done = watch.wait_all(keys, timeout=120 + n * 0.5)
        audited = _audited(members, namespace)
        per_certificate = Counter(
            name for replica in members.values() for name in _records(replica, namespace)[0]
        )
        signed, written = _records(members[victim], namespace)
    finally:
        for replica in members.values():
            replica.stop()
    signatures = env.kms.count(SIGN, key=key) - 1
    # What a SIGKILL costs whatever the sharding: certificates the victim had signed and not
    # yet written (the key lived in its memory only) are signed again by their new owner.
    unwritten = set(signed) - written
    twice = {name for name, count in per_certificate.items() if count > 1}
    return {
        "replicas": 3,
        "certificates": n,
        "ready_at_kill": ready_at_kill,
        "takeover_s": round(taken_over - killed_at, 2),
        "all_ready_after_kill_s": round(done - killed_at, 2),
        "seconds": round(done - t0, 2),
        "duplicate_signatures": signatures - n,
        "signed_unwritten_by_killed": len(unwritten),
        "duplicates_not_from_the_kill": len(twice - unwritten),
        "unaudited_signatures": signatures - sum(audited.values()),
        "audited_total": sum(audited.values()),
    }


def sharding_phase(env: Env, sizes: Sizes) -> dict[str, Any]:
    n = sizes.throughput
    batches = [_batch(env, replicas, n) for replicas in REPLICAS]
    return {
        "sharding": {
            "certificates": n,
            "batches": batches,
            "killed_mid_batch": _killed(env, n),
            "note": "2 cores shared by apiserver, etcd, the KMS emulator and every replica: "
            "the apiserver is the bottleneck; replicas add little or no capacity here",
        }
    }


def sharding_rows(figures: dict[str, Any], add: Callable[..., None]) -> None:
    """The figure's rows in the bench table."""
    if (f := figures.get("sharding")) is None:
        return
    for batch in f["batches"]:
        label = f"{batch['replicas']} replica(s): s for {batch['certificates']}"
        add("sharding", label, batch["seconds"], "", None)
        per = batch["signatures_per_certificate"]
        add("sharding", "  signatures per certificate", per, "1", per == 1)
    k = f["killed_mid_batch"]
    add("sharding", "killed mid-batch: takeover s", k["takeover_s"], "<= 15", k["takeover_s"] <= 15)
    add("sharding", "  duplicate signatures", k["duplicate_signatures"], "0", None)
    add(
        "sharding",
        "  of which signed, unwritten by the killed",
        k["signed_unwritten_by_killed"],
        "",
        None,
    )
    add(
        "sharding",
        "  duplicates not from the kill",
        k["duplicates_not_from_the_kill"],
        "0",
        k["duplicates_not_from_the_kill"] == 0,
    )

"""What every phase shares: sizes, the run's environment, timed windows and quiet waits.

A timed window records its own cost (CPU seconds per process, apiserver requests) and the
machine's state (load average, other processes' CPU, see `bench.noise`), so that a figure
measured in several windows can say whether its windows are comparable.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kube import Kube
from bench.noise import WindowMeter
from bench.procs import KmsEmulator, Operator, cpu_seconds, summarize_collapsed

ROUNDS = 3
"""Windows per side (operator and floor alternate) or rounds per figure: issue 19 asks
for at least three, the fewest with a median that one bad window cannot move."""


@dataclass
class Sizes:
    throughput: int
    latency_runs: int
    memory: int
    unrelated: int
    unrelated_kib: int
    storm: int
    storm_qps: float
    pcr_latency_runs: int
    """PodCertificateRequests per latency round."""
    pcr_throughput: int
    """PodCertificateRequests created at once per window."""
    pcr_memory: int
    """Issued PodCertificateRequests present for the memory reading."""
    rounds: int = ROUNDS
    rotation: int = 2_000
    """Certificates of the issuer whose CA key is rotated."""
    rotation_qps: float = 50.0
    """--sign-qps during the rotation."""
    certmanager: int = 500
    """Certificates per window of the side-by-side with cert-manager."""
    certmanager_large: int = 5_000
    """Certificates of its one large pair of windows (0: none)."""
    crdcost: int = 500
    """Certificate creates per window of the admission-cost figure (no controller)."""

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                100, 20, 1_000, 1_000, 100, 200, 50.0, 34, 200, 1_000, rotation=500,
                certmanager=100, certmanager_large=1_000, crdcost=200,
            )  # fmt: skip
        return cls(500, 50, 10_000, 10_000, 100, 2_000, 50.0, 100, 1_000, 10_000)


def kms_keys(rounds: int) -> list[str]:
    """The emulator's keys: one per Issuer, so that each window's KMS calls are its own
    (a window's namespace has an Issuer of its own, see ``issuance_phase``)."""
    per_window = [
        f"{side}-{i}" for side in ("throughput", "pcr", "certmanager") for i in range(rounds)
    ]
    return [
        "latency", "floor", "memory", "storm", "pcr-lat", "pcr-floor", "pcr-mem",
        "rotation-old", "rotation-new", "certmanager-large", *per_window,
        "sharding-1", "sharding-2", "sharding-3", "sharding-kill",
    ]  # fmt: skip


@dataclass
class Env:
    kube: Kube
    kms: KmsEmulator
    operator: Operator
    workdir: Path
    profile: bool
    """Sample the operator with py-spy during each timed phase."""
    control_plane_pids: dict[str, int]
    """kube-apiserver and etcd, for the CPU accounting of timed windows."""
    restart_sources: tuple[Path, ...] = ()
    """Other source trees (each a folder holding ``signet``) whose operator restarts in
    turn with the harness's own in every restart round: a before/after in one run."""

    def spy(self, name: str) -> Path | None:
        return self.workdir / f"py-spy-{name}.txt" if self.profile else None

    def pids(self) -> dict[str, int]:
        """The benchmark's own processes; the operator only while it runs."""
        pids = {"kms_emulator": self.kms.pid, "harness": os.getpid(), **self.control_plane_pids}
        if self.operator.process is not None:
            pids["operator"] = self.operator.pid
        return pids


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def profile_summary(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {"file": str(path), **summarize_collapsed(path)}


@contextmanager
def window(
    env: Env, name: str, expect_s: float = 0.0, extra: dict[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """Fill the yielded dict with what the block cost and what the machine did meanwhile
    (`bench.noise.WindowMeter`: seconds, CPU seconds per process, load average, other
    processes' CPU) and the apiserver requests it served (by verb and resource; the
    harness's watch included). With ``--profile`` and ``expect_s``, also a Go CPU profile
    of the apiserver over the block's first ``expect_s`` seconds (``apiserver-<name>.pprof``,
    for ``go tool pprof``). ``extra`` names more processes of the benchmark to account
    (a floor script)."""
    profiler = None
    if env.profile and expect_s > 0:
        out = env.workdir / f"apiserver-{name}.pprof"
        seconds = max(1, int(expect_s))
        profiler = threading.Thread(
            target=lambda: out.write_bytes(env.kube.apiserver_profile(seconds)), daemon=True
        )
        profiler.start()
    pids = {**env.pids(), **(extra or {})}
    meter = WindowMeter(pids)
    before = env.kube.apiserver_requests()
    meter.start()
    spent: dict[str, Any] = {"name": name}
    yield spent
    started = {k: v for k, v in env.pids().items() if k not in pids}  # a restart inside
    spent.update(meter.stop(started))
    if profiler is not None:
        profiler.join()
    after = env.kube.apiserver_requests()
    requests = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
    ranked = sorted(((k, v) for k, v in requests.items() if v), key=lambda kv: -kv[1])
    spent["requests"] = dict(ranked)


WRITES = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE", "APPLY")
OPERATOR_IDLE_CPU = 0.05
"""CPU seconds the operator may spend in the quiet second (its /metrics answering the
harness, a heap trim): more means it is still working through watch events."""


def wait_quiet(env: Env, timeout: float = 120.0) -> float:
    """Until a second passes without a write to the apiserver and with the operator idle;
    returns the seconds waited. The operator posts its Events after the objects are ready
    and works through the deletions between windows: the next window must not pay for
    either."""
    start = time.monotonic()
    deadline = start + timeout
    before = env.kube.apiserver_requests()
    running = env.operator.process is not None
    cpu_before = cpu_seconds(env.operator.pid) if running else 0.0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = env.kube.apiserver_requests()
        cpu_after = cpu_seconds(env.operator.pid) if running else 0.0
        writes = sum(
            after[k] - before.get(k, 0.0) for k in after if k.split(" ")[0].upper() in WRITES
        )
        if writes == 0 and cpu_after - cpu_before <= OPERATOR_IDLE_CPU:
            return time.monotonic() - start
        before, cpu_before = after, cpu_after
    raise TimeoutError("the apiserver kept taking writes or the operator kept working")

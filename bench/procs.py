"""The processes a benchmark run drives: KMS emulator, operator, optional py-spy.

Each is a child process so that its CPU does not share the harness's GIL; the harness
only observes them (emulator audit log, operator /metrics and /proc/<pid>/status).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import signet
from signet_dev.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(signet.__file__).resolve().parents[1]
"""Where the harness's own ``signet`` came from; the emulator and operator children get the
same one (``PYTHONPATH=/some/snapshot/operator python -m bench`` benchmarks a snapshot)."""
KEY_RING = "bench"
ALGORITHM = "EC_SIGN_P256_SHA256"
SIGN = "AsymmetricSign"
GET_PUBLIC_KEY = "GetPublicKey"


def child_env() -> dict[str, str]:
    """The environment of the harness's Python children: the harness's own ``signet``
    first on the path."""
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class KmsCall:
    """One line of the emulator's audit log."""

    at: float
    """Wall-clock (epoch seconds) when the call reached the emulator (its audit entry is
    stamped at completion; the recorded latency is subtracted)."""
    method: str
    resource: str
    code: str


class KmsEmulator:
    """``signet kms-emulator`` as a subprocess; calls are counted from its audit log, which
    the emulator flushes per call (the in-process ``Counters`` are not reachable)."""

    def __init__(self, folder: Path, keys: Sequence[str]) -> None:
        self.folder = folder
        self.audit_path = folder / "kms-audit.jsonl"
        self.keys = list(keys)
        self.versions: dict[str, str] = {}
        self.address = ""
        self._process: subprocess.Popen[str] | None = None
        self._offset = 0
        self._calls: list[KmsCall] = []

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "signet.cli",
            "kms-emulator",
            "--port=0",
            f"--audit-log={self.audit_path}",
        ]
        for key in self.keys:
            command.append(f"--create={KEY_RING}/{key}:{ALGORITHM}")
        self._process = subprocess.Popen(
            command, env=child_env(), stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline().strip()
        if not first.startswith("listening on "):
            raise RuntimeError(f"KMS emulator did not start: {first!r}")
        self.address = first.removeprefix("listening on ")
        for key in self.keys:
            self.versions[key] = self._process.stdout.readline().strip()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def calls(self) -> list[KmsCall]:
        """Every call so far (the file is read incrementally)."""
        if self.audit_path.exists():
            with self.audit_path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
            end = chunk.rfind(b"\n") + 1
            self._offset += end
            for line in chunk[:end].splitlines():
                entry = json.loads(line)
                payload = entry["protoPayload"]
                self._calls.append(
                    KmsCall(
                        datetime.datetime.fromisoformat(entry["timestamp"]).timestamp()
                        - float(entry.get("latencyMs") or 0) / 1000,
                        payload["methodName"].rsplit(".", 1)[-1],
                        payload["resourceName"],
                        payload["status"]["codeName"],
                    )
                )
        return self._calls

    def count(
        self,
        method: str,
        *,
        key: str | None = None,
        since: float = 0.0,
        until: float = float("inf"),
        code: str | None = "OK",
    ) -> int:
        """Calls of ``method`` on ``key`` (a key id given to the constructor) in a window."""
        version = self.versions[key] if key else None
        return sum(
            1
            for c in self.calls()
            if c.method == method
            and since <= c.at <= until
            and (version is None or c.resource == version)
            and (code is None or c.code == code)
        )

    def times(self, method: str, *, key: str, since: float = 0.0) -> list[float]:
        version = self.versions[key]
        return [
            c.at
            for c in self.calls()
            if c.method == method and c.resource == version and c.at >= since and c.code == "OK"
        ]


@dataclass
class Operator(OperatorProcess):
    """``signet run`` as a subprocess (the shared launcher), one log per start, optionally
    under bench/tracemalloc_run.py; the children run the harness's own ``signet``."""

    tracemalloc_out: Path | None = None
    """Run under bench/tracemalloc_run.py; :meth:`dump_allocations` appends to this file."""
    trace: bool = True
    """With ``tracemalloc_out``: trace allocations (slow), else only pymalloc statistics."""
    audit: bool = False
    log_per_start: bool = True
    stop_timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=child_env)

    def launcher(self) -> list[str]:
        if self.tracemalloc_out is None:
            return super().launcher()
        wrapper = [sys.executable, str(ROOT / "bench" / "tracemalloc_run.py")]
        return [*wrapper, str(self.tracemalloc_out), "trace" if self.trace else "stats"]

    def start_for(
        self, namespaces: Sequence[str], extra: Sequence[str] = (), timeout: float = 90
    ) -> float:
        """Start watching ``namespaces`` and wait for /metrics to answer; returns the spawn
        time (perf_counter)."""
        return self.start([*(f"--namespace={ns}" for ns in namespaces), *extra], timeout)

    def dump_allocations(self, wait: float = 60) -> None:
        """Ask a tracemalloc-wrapped operator for a snapshot and wait until it is written."""
        if self.tracemalloc_out is None:
            return
        size = self.tracemalloc_out.stat().st_size if self.tracemalloc_out.exists() else 0
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.tracemalloc_out.exists() and self.tracemalloc_out.stat().st_size > size:
                time.sleep(1)  # let the write finish
                return
            time.sleep(0.5)

    def memory(self) -> dict[str, Any]:
        """VmRSS and VmHWM (peak) of the operator process in MiB."""
        return proc_memory(self.pid)

    def metrics_named(self, *names: str, timeout: float = 5) -> str:
        """Only the named metric families of /metrics (prometheus_client's ``name[]``
        filter; the per-Certificate series, from a collector of their own, are not
        filtered this way): the whole text is 60,000 lines at 10,000 Certificates, and
        rendering it costs the operator CPU that a poll every half second would take
        from what it is being timed at."""
        query = urllib.parse.urlencode([("name[]", name) for name in names])
        url = f"http://127.0.0.1:{self.metrics_port}/metrics?{query}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text: str = response.read().decode()
            return text


def proc_memory(pid: int) -> dict[str, Any]:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return {
        "rss_mib": round(values["VmRSS"], 1),
        "hwm_mib": round(values["VmHWM"], 1),
        "rss_by_mapping_mib": rss_by_mapping(pid),
    }


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Resident memory by kind of mapping: ``heap`` (brk: the main malloc arena, where
    Python objects live), ``anonymous`` (other malloc arenas, mmapped blocks, thread
    stacks), ``files`` (libraries and other mapped files)."""
    kinds = {"heap": 0, "anonymous": 0, "files": 0, "other": 0}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            kind = (
                "heap"
                if name == "[heap]"
                else "anonymous"
                if not name
                else "files"
                if name.startswith("/")
                else "other"
            )
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1])
    return {name: round(kb / 1024, 1) for name, kb in kinds.items()}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process spent between ``start`` and ``stop``: on a small machine the
    operator, the apiserver and etcd share the cores, so where a timed window's CPU went
    says more than its length."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def stop(self) -> dict[str, float]:
        return {
            name: round(cpu_seconds(pid) - self._start[name], 2) for name, pid in self._pids.items()
        }


def py_spy_binary() -> str:
    """py-spy next to the harness's Python, else on ``$PATH``. It is not among the
    project's dependencies (a profiler, only ``--profile`` needs it): ``pip install
    py-spy`` into the venv, or anywhere on the path."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("--profile needs py-spy: pip install py-spy")
    return found


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, rate: int = 100) -> Iterator[None]:
    """Sample ``pid`` with py-spy (collapsed stacks) for the duration of the block. Only
    the thread holding the GIL is sampled (``--gil``), so shares are of CPU, not of
    threads waiting on sockets or queues."""
    if out is None:
        yield
        return
    process = subprocess.Popen(
        [
            py_spy_binary(),
            "record",
            f"--pid={pid}",
            f"--rate={rate}",
            "--gil",
            "--format=raw",
            f"--output={out}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and inclusive share of samples from a py-spy raw profile."""
    if not path.exists():
        return {"self": [], "inclusive": []}
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if total == 0:
        return {"self": [], "inclusive": []}

    def best(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(frame, round(100 * n / total, 1)) for frame, n in ranked]

    return {"self": best(self_counts), "inclusive": best(inclusive)}

"""``signet run`` as a child process: the one launcher the tests, the benchmarks and the demo
share.

A child process rather than an in-process kopf loop because it is what users run: its log
can be grepped for key material, it can be killed and restarted like a pod, and its CPU
does not share the caller's GIL. Each caller keeps its own options (log format, audit log,
ports, extra flags, one log per start, a different Python entry point); what they share is
how the process is started, how it is known to be up (``/metrics`` answers) and how it is
stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from signet_dev.controlplane import die_with_parent, free_port


class OperatorError(RuntimeError):
    """The operator exited or did not answer in time; the message carries its log's tail."""


@dataclass
class OperatorProcess:
    """``signet run`` against ``kubeconfig`` and the KMS emulator at ``kms_address``, its
    output in ``folder``; one process per :meth:`start`, stopped with SIGTERM like a pod."""

    kubeconfig: Path
    kms_address: str
    folder: Path
    extra_args: Sequence[str] = ()
    """Flags given on every start (after the launcher's own, so they win)."""
    audit: bool = True
    """Write the signature audit log to :attr:`audit_log`."""
    log_format: str = "json"
    health: bool = True
    """Serve /healthz on a free port (:attr:`health_port`); else ``--health-port=0``."""
    kms_deadline: float | None = None
    """``--kms-deadline`` in seconds; None keeps the operator's default."""
    log_per_start: bool = False
    """One log file per start (``operator-N.log``) instead of one appended to."""
    detach: bool = False
    """Own session (a Ctrl-C at the caller does not reach it; the caller stops it in order)
    and die with the caller if that is killed outright."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the caller's environment."""
    stop_timeout: float = 30.0
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    starts: int = 0
    args: list[str] = field(default_factory=list)
    """The command line of the last start, from ``run`` on."""

    @property
    def log(self) -> Path:
        name = f"operator-{self.starts}.log" if self.log_per_start else "operator.log"
        return self.folder / name

    @property
    def audit_log(self) -> Path:
        return self.folder / "audit.jsonl"

    @property
    def pid(self) -> int:
        assert self.process is not None, "operator not running"
        return self.process.pid

    def launcher(self) -> list[str]:
        """The command before ``run``; subclasses wrap the operator in something else."""
        return [sys.executable, "-m", "signet.cli"]

    def start(self, extra: Sequence[str] = (), timeout: float = 60) -> float:
        """Start and wait for /metrics to answer; ``extra`` flags are for this start only.
        Returns when the process was spawned (``time.perf_counter()``), for start-up
        timings."""
        self.metrics_port = free_port()
        self.health_port = free_port() if self.health else 0
        self.args = [
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--kms-emulator={self.kms_address}",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            f"--log-format={self.log_format}",
            *([f"--audit-log={self.audit_log}"] if self.audit else []),
            *([f"--kms-deadline={self.kms_deadline:g}"] if self.kms_deadline is not None else []),
            *self.extra_args,
            *extra,
        ]
        self.starts += 1
        spawned = time.perf_counter()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.launcher(), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=self.detach,
                preexec_fn=die_with_parent if self.detach else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self.metrics(timeout=1)
                return spawned
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise OperatorError(f"operator not ready in {timeout:g}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        """Raise :class:`OperatorError` if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise OperatorError(f"operator exited:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the exit (SIGKILL after ``stop_timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def metrics(self, timeout: float = 5) -> str:
        """The Prometheus text of /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text: str = response.read().decode()
            return text

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the current log, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

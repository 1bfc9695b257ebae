"""``make demo``: the whole system on one machine in about ten seconds, then a tour of it.

Starts a real control plane on loopback (etcd, kube-apiserver, kube-controller-manager),
the KMS emulator with the key the examples name, and the operator exactly as users run it
(``signet run`` in a child process); applies the CRDs and ``examples/quickstart``; waits
for every Certificate to be Ready and shows what was issued with the same code as
``signet inspect``. Then it keeps running so you can poke at it with kubectl and the
``signet`` commands, until Ctrl-C. ``--once`` stops after the summary (CI runs that).

Everything it starts is torn down on exit, in reverse order, including after Ctrl-C
during start-up; child processes also die with it if it is killed outright.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
QUICKSTART = ROOT / "examples" / "quickstart"
KEY_RING, KEY, ALGORITHM = "demo", "ca", "EC_SIGN_P256_SHA256"
"""Must match the keyVersion in examples/*/: projects/signet-dev/.../keyRings/demo/cryptoKeys/ca."""
CRD_NAMES = ("certificates.signet.dev", "issuers.signet.dev", "clusterissuers.signet.dev")
SUMMARY_LABELS = {
    "Subject",
    "SPIFFE ID",
    "DNS names",
    "IP addresses",
    "URIs",
    "Type",
    "Key ID",
    "Principals",
    "Validity",
    "Issuer",
    "Issued by",
    "Key algorithm",
    "CA fingerprint",
    "KMS key version",
    "Private key",
}
"""The lines of ``signet inspect`` worth showing for every identity in the demo."""


class DemoError(RuntimeError):
    """Start-up failed; the message says what to look at."""


class Progress:
    """``==> step`` lines with the time the previous step took, so a slow start is visible."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self._last = self.started

    def step(self, text: str) -> None:
        now = time.monotonic()
        print(f"==> {text}  [{now - self.started:5.1f}s]", file=self.out, flush=True)
        self._last = now

    def note(self, text: str) -> None:
        print(f"    {text}", file=self.out, flush=True)


def _die_with_parent() -> None:
    """Between fork and exec: the operator must not outlive a demo that was SIGKILLed."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    from signet_dev.controlplane import free_port

    return free_port()


@dataclass
class Operator:
    """``signet run`` as a child process, like a pod: stopped with SIGTERM, log in a file."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls, kubeconfig: Path, kms_address: str, workdir: Path, timeout: float = 60
    ) -> Operator:
        metrics_port = _free_port()
        log = workdir / "operator.log"
        command = [
            sys.executable,
            "-m",
            "signet.cli",
            "run",
            f"--kubeconfig={kubeconfig}",
            f"--kms-emulator={kms_address}",
            f"--metrics-port={metrics_port}",
            "--health-port=0",
            "--log-format=text",
            f"--audit-log={workdir / 'audit.jsonl'}",
        ]
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
                preexec_fn=_die_with_parent,
            )
        operator = cls(process, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(f"the operator exited:\n{operator.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1):
                    return operator
            except OSError:
                time.sleep(0.1)
        operator.stop()
        raise DemoError(f"the operator did not start in {timeout:.0f}s:\n{operator.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def kubectl(bin_dir: Path, kubeconfig: Path, *args: str) -> str:
    """Run the Go-built kubectl; failures carry its stderr."""
    result = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def wait_ready(
    custom: Any,
    progress: Progress,
    timeout: float,
    alive: Callable[[], None],
) -> list[dict[str, Any]]:
    """Every Certificate Ready=True for its current generation; reports each as it lands."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        alive()
        items: list[dict[str, Any]] = custom.list_cluster_custom_object(
            "signet.dev", "v1alpha1", "certificates"
        )["items"]
        pending = []
        for item in items:
            ident = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
            ready = _ready(item)
            done = ready.get("status") == "True" and ready.get("observedGeneration") == item[
                "metadata"
            ].get("generation")
            if done and ident not in seen:
                seen.add(ident)
                reason = ready.get("reason")
                progress.note(
                    f"Certificate {ident} is Ready" + (f" ({reason})" if reason != "Ready" else "")
                )
            elif not done:
                pending.append(f"{ident}: {ready.get('reason', 'no condition yet')}")
        if items and not pending:
            return items
        if time.monotonic() > deadline:
            raise DemoError("Certificates not Ready in time:\n  " + "\n  ".join(pending))
        time.sleep(0.25)


def summary(core: Any, api: Any, certificates: list[dict[str, Any]]) -> str:
    """What was issued, one block per Certificate, from the Secrets themselves."""
    from signet.ops.report import describe_secret, render

    now = datetime.datetime.now(datetime.UTC)
    blocks = []
    for cert in sorted(
        certificates, key=lambda c: (c["metadata"]["namespace"], c["metadata"]["name"])
    ):
        namespace, name = cert["metadata"]["namespace"], cert["metadata"]["name"]
        secret_name = cert["spec"]["secretName"]
        secret = api.sanitize_for_serialization(core.read_namespaced_secret(secret_name, namespace))
        report = describe_secret(secret)
        rows = [(k, v) for k, v in report.rows(now) if k in SUMMARY_LABELS]
        kind = "SSH" if "ssh" in cert["spec"] else "X.509"
        title = f"Certificate {namespace}/{name} ({kind}) -> Secret {secret_name}"
        blocks.append(title + "\n" + render(rows, indent="  "))
    return "\n\n".join(blocks)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill <pid>`` tears down as cleanly as Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(once: bool, out: TextIO = sys.stdout, ready_timeout: float = 90.0) -> int:
    from signet_dev import ControlPlaneError, LocalControlPlane, tools_bin

    progress = Progress(out)
    try:
        bin_dir = tools_bin()
    except ControlPlaneError:
        bin_dir = ROOT / ".tools" / "bin"
    missing = [t for t in ("kube-apiserver", "etcd", "kubectl") if not (bin_dir / t).exists()]
    if missing:
        print(
            f"error: {', '.join(missing)} not found in {bin_dir}; run `make tools` first "
            "(builds the pinned Kubernetes binaries, ~7 minutes the first time)",
            file=sys.stderr,
        )
        return 2
    if not (CRDS.is_dir() and QUICKSTART.is_dir()):
        print(f"error: {CRDS} or {QUICKSTART} missing: run from a checkout", file=sys.stderr)
        return 2

    import kubernetes

    from signet.kms.emulator import serve

    with contextlib.ExitStack() as stack:
        progress.step("Starting etcd, kube-apiserver and kube-controller-manager on loopback")
        plane = stack.enter_context(LocalControlPlane(bin_dir=bin_dir))
        assert plane.workdir is not None
        kubeconfig = plane.kubeconfig
        progress.note(f"kube-apiserver {plane.server}, working directory {plane.workdir}")

        progress.step("Starting the KMS emulator")
        emulator = serve(port=0, audit_log=plane.workdir / "kms-audit.jsonl")
        stack.callback(emulator.stop)
        version = emulator.ensure_key(KEY_RING, KEY, ALGORITHM)
        progress.note(f"{emulator.address}: key {version.name} ({ALGORITHM})")

        progress.step("Applying the CRDs")
        kubectl(bin_dir, kubeconfig, "apply", "--server-side", "-f", str(CRDS))
        for crd in CRD_NAMES:
            kubectl(
                bin_dir, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
                f"crd/{crd}",
            )  # fmt: skip

        progress.step("Starting the operator (signet run)")
        operator = Operator.start(kubeconfig, emulator.address, plane.workdir)
        stack.callback(operator.stop)
        progress.note(f"log: {operator.log}")

        def alive() -> None:
            if operator.process.poll() is not None:
                raise DemoError(f"the operator exited:\n{operator.log_tail()}")

        progress.step(f"Applying {QUICKSTART.relative_to(ROOT)}")
        for line in kubectl(bin_dir, kubeconfig, "apply", "-f", str(QUICKSTART)).splitlines():
            progress.note(line)

        progress.step("Waiting for every Certificate to be Ready")
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
        try:
            certificates = wait_ready(custom, progress, ready_timeout, alive)
        except DemoError as error:
            raise DemoError(f"{error}\n--- operator log ---\n{operator.log_tail()}") from None

        progress.step("Done")
        print("\n$ kubectl get certificates,issuers -A\n", file=out)
        print(kubectl(bin_dir, kubeconfig, "get", "certificates,issuers", "-A"), file=out)
        print("What was issued (signet inspect SECRET -n NAMESPACE shows everything):\n", file=out)
        print(summary(core, api, certificates), file=out, flush=True)
        if once:
            return 0

        print(
            f"\nSignet is running. In another shell:\n\n"
            f"  export KUBECONFIG={kubeconfig}\n"
            f"  {bin_dir / 'kubectl'} get certificates -A\n"
            f"  signet status -A\n"
            f"  signet inspect web-tls -n quickstart\n"
            f"  signet renew web -n quickstart\n\n"
            f"Ctrl-C stops everything and removes {plane.workdir}.",
            file=out,
            flush=True,
        )
        stop = threading.Event()
        while not stop.wait(1.0):
            alive()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signet_dev.demo", description=__doc__)
    parser.add_argument("--once", action="store_true", help="exit after printing the summary")
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for Certificates"
    )
    args = parser.parse_args(argv)
    # The in-process KMS emulator is a gRPC server; its fork handlers only log noise when
    # we spawn kubectl and the operator, which never use gRPC state inherited by fork.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from signet_dev import ControlPlaneError

    try:
        with _sigterm_as_interrupt():
            return run(args.once, ready_timeout=args.timeout)
    except KeyboardInterrupt:
        print("\nStopped; everything the demo started has been cleaned up.", file=sys.stderr)
        return 0 if not args.once else 130
    except (DemoError, ControlPlaneError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

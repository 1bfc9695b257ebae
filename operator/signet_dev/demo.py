"""``make demo``: the whole system on one machine in about ten seconds, then a tour of it.

Starts a real control plane on loopback (etcd, kube-apiserver, kube-controller-manager),
the KMS emulator with the key the examples name, and the operator exactly as users run it
(``signet run`` in a child process); applies the CRDs and ``examples/quickstart``; waits
for every Certificate to be Ready and shows what was issued with the same code as
``signet inspect``. Where a kubelet node can run (root, containerd, runc; one per
machine), it also starts one and runs examples/mtls-spiffe's two roles as pods with the
identities Signet issued them, and shows what they saw of each other over mutual TLS.
Then it keeps running so you can poke at it with kubectl and the ``signet`` commands, until
Ctrl-C. ``--once`` stops after the summary (CI runs that).

Everything it starts is torn down on exit, in reverse order, including after Ctrl-C
during start-up; child processes also die with it if it is killed outright.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from signet_dev.controlplane import LocalControlPlane

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
QUICKSTART = ROOT / "examples" / "quickstart"
MESH = "mtls-spiffe"
"""The namespace (and example) whose identities the demo's pods use."""
KEY_RING, KEY, ALGORITHM = "demo", "ca", "EC_SIGN_P256_SHA256"
"""Must match the keyVersion in examples/*/: projects/signet-dev/.../keyRings/demo/cryptoKeys/ca."""
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


ROLES = {"backend": ("server", "backend-svid"), "frontend": ("client", "frontend-svid")}
"""examples/mtls-spiffe's two roles: the workload's mode and the Secret each one mounts."""


@dataclass(frozen=True)
class Mesh:
    """The demo's two pods: where the server listens and where each reports what it saw."""

    server: str
    status_ports: dict[str, int]


def run_mesh(kube: Any, node: Any) -> Mesh:
    """examples/mtls-spiffe's backend and frontend as pods of the node's workload, mounting
    the Secrets Signet wrote and the trust ConfigMap it published, until each has completed
    three handshakes with the other."""
    from signet_dev.controlplane import free_port
    from signet_dev.pods import mtls_pod, run_pod, spiffe_id, wait_status

    mesh = Mesh(f"127.0.0.1:{free_port()}", {role: free_port() for role in ROLES})
    args = {
        "backend": [f"--listen={mesh.server}", f"--allow={spiffe_id(MESH, 'frontend')}"],
        "frontend": [
            f"--connect={mesh.server}",
            f"--expect={spiffe_id(MESH, 'backend')}",
            "--interval=500ms",
        ],
    }
    for role, (mode, secret) in ROLES.items():
        manifest = mtls_pod(
            role,
            MESH,
            mode,
            [*args[role], f"--status=127.0.0.1:{mesh.status_ports[role]}"],
            secret=secret,
            service_account=role,
        )
        run_pod(kube, node, manifest)
    for role, port in mesh.status_ports.items():
        wait_status(port, f"{role} handshakes", lambda r: r["ok"] >= 3, failure=DemoError)
    return mesh


def _current_serial(core: Any, secret: str) -> str:
    """The serial of the certificate the Secret holds now, written as the workload writes
    serials (lower-case hex)."""
    from cryptography import x509

    data = core.read_namespaced_secret(secret, MESH).data or {}
    cert = x509.load_pem_x509_certificate(base64.b64decode(data.get("tls.crt", "")))
    return format(cert.serial_number, "x")


def mesh_summary(core: Any, mesh: Mesh) -> str:
    """What each pod reported on its status endpoint (SPIFFE IDs, counts and serials; the
    workload never reports key material), each serial checked against the Secret it came
    from: the certificates in use are the ones Signet issued."""
    from signet.ops.report import render
    from signet_dev.pods import spiffe_id, status

    current = {role: _current_serial(core, secret) for role, (_, secret) in ROLES.items()}

    def serial(seen: list[str], role: str) -> str:
        latest = seen[-1] if seen else "none"
        secret = ROLES[role][1]
        if latest == current[role]:
            return f"{latest} (the certificate in Secret {secret})"
        return f"{latest} (Secret {secret} holds {current[role]} now: renewed since)"

    blocks = []
    for role, port in mesh.status_ports.items():
        report = status(port)
        peer = next(other for other in ROLES if other != role)
        peers = ", ".join(f"{name} ({count})" for name, count in sorted(report["peers"].items()))
        rows = [
            ("Handshakes", f"{report['ok']} ok, {report['failed']} failed"),
            ("Peer SPIFFE IDs", peers or "none"),
            ("Own serial", serial(report["ownSerials"], role)),
            ("Peer serial", serial(report["peerSerials"], peer)),
        ]
        if report["lastError"]:
            rows.append(("Last error", report["lastError"]))
        title = f"Pod {MESH}/{role} ({ROLES[role][0]}, {spiffe_id(MESH, role)})"
        blocks.append(title + "\n" + render(rows, indent="  "))
    return "\n\n".join(blocks)


def start_pods(plane: LocalControlPlane, kube: Any, progress: Progress) -> Mesh | None:
    """Start the node and the two pods, or say in one line why not: a machine without root
    or containerd, or with another session's node, still gets the rest of the demo."""
    from signet_dev.controlplane import ControlPlaneError
    from signet_dev.pods import node_unavailable

    reason = node_unavailable()
    if reason is None:
        progress.step("Starting a kubelet node (containerd + runc, host networking)")
        try:
            node = plane.start_node()
        except ControlPlaneError as error:
            reason = f"the node did not start: {str(error).splitlines()[0]}"
    if reason is not None:
        progress.step(f"Skipping the workload pods: {reason}")
        return None
    progress.step(f"Running {MESH}'s backend and frontend as pods with their Signet identities")
    return run_mesh(kube, node)


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
    from signet_dev.operator import OperatorProcess

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

    from signet.kms.emulator import serve
    from signet_dev.kube import KubeClient
    from signet_dev.pods import example_objects

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
        kube = KubeClient(kubeconfig)
        stack.callback(kube.close)
        kube.apply_crds(CRDS)

        progress.step("Starting the operator (signet run)")
        operator = OperatorProcess(
            kubeconfig,
            emulator.address,
            plane.workdir,
            log_format="text",
            health=False,
            detach=True,  # Ctrl-C reaches the demo, which stops it in order
            stop_timeout=20,
        )
        stack.callback(operator.stop)
        operator.start()
        progress.note(f"log: {operator.log}")

        progress.step(f"Applying {QUICKSTART.relative_to(ROOT)}")
        for line in kube.kubectl("apply", "-f", str(QUICKSTART)).stdout.splitlines():
            progress.note(line)

        progress.step(f"Applying examples/{MESH} without its Deployments (identities only)")
        objects = {"apiVersion": "v1", "kind": "List", "items": example_objects(MESH)}
        for line in kube.apply(objects).stdout.splitlines():
            progress.note(line)

        progress.step("Waiting for every Certificate to be Ready")
        try:
            certificates = wait_ready(kube.custom, progress, ready_timeout, operator.check_alive)
        except DemoError as error:
            raise DemoError(f"{error}\n--- operator log ---\n{operator.log_tail()}") from None

        mesh = start_pods(plane, kube, progress)

        progress.step("Done")
        print("\n$ kubectl get certificates,issuers -A\n", file=out)
        print(kube.kubectl("get", "certificates,issuers", "-A").stdout, file=out)
        print("What was issued (signet inspect SECRET -n NAMESPACE shows everything):\n", file=out)
        print(summary(kube.core, kube.api, certificates), file=out, flush=True)
        if mesh is not None:
            print("\nWhat the pods saw of each other over mutual TLS:\n", file=out)
            print(mesh_summary(kube.core, mesh), file=out, flush=True)
        if once:
            return 0

        kubectl = bin_dir / "kubectl"
        pods = f"  {kubectl} logs -n {MESH} frontend\n" if mesh is not None else ""
        print(
            f"\nSignet is running. In another shell:\n\n"
            f"  export KUBECONFIG={kubeconfig}\n"
            f"  {kubectl} get certificates -A\n"
            f"{pods}"
            f"  signet status -A\n"
            f"  signet inspect web-tls -n quickstart\n"
            f"  signet renew web -n quickstart\n\n"
            f"Ctrl-C stops everything and removes {plane.workdir}.",
            file=out,
            flush=True,
        )
        stop = threading.Event()
        while not stop.wait(1.0):
            operator.check_alive()
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
    from signet_dev.kube import KubectlError
    from signet_dev.operator import OperatorError

    try:
        with _sigterm_as_interrupt():
            return run(args.once, ready_timeout=args.timeout)
    except KeyboardInterrupt:
        print("\nStopped; everything the demo started has been cleaned up.", file=sys.stderr)
        return 0 if not args.once else 130
    except (DemoError, ControlPlaneError, KubectlError, OperatorError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

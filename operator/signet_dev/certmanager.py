"""The real cert-manager controller as a child process, and its CRDs: what the end-to-end
tests and the side-by-side benchmark run Signet next to.

The binary is cert-manager's own controllers (certificates, certificate requests with the
CA and self-signed issuers, the approver, issuers and ingress-shim) wired by a small main
of ours (tools/go/certmanager), because cert-manager's ``cmd/controller`` module is not
served by the module proxy. The CRDs are copied by `make tools` from the same pinned
module. No webhook runs: the CRDs carry no conversion webhook, and the API's own schema
validation is what cert-manager's webhook would add to.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from signet_dev.controlplane import ControlPlaneError, Started, free_port, spawn, tools_bin
from signet_dev.kube import CHECKOUT, KubeClient

CRDS = CHECKOUT / ".tools" / "crds" / "cert-manager"
CRD_NAMES = tuple(
    f"{plural}.cert-manager.io"
    for plural in ("certificaterequests", "certificates", "issuers", "clusterissuers")
)
CONTROLLERS = (
    "certificaterequests-approver",
    "certificaterequests-issuer-ca",
    "certificaterequests-issuer-selfsigned",
    "certificates-issuing",
    "certificates-key-manager",
    "certificates-readiness",
    "certificates-request-manager",
    "certificates-revision-manager",
    "certificates-trigger",
    "clusterissuers",
    "ingress-shim",
    "issuers",
)
"""What cert-manager runs by default, less ACME, Vault, Venafi and the Gateway API shims
(none of which this build carries)."""


class CertManagerError(RuntimeError):
    """The controller exited or did not become ready; the message carries its log's tail."""


def binary() -> Path:
    """The built controller (``make tools``)."""
    try:
        folder = tools_bin()
    except ControlPlaneError:
        folder = CHECKOUT / ".tools" / "bin"
    return folder / "cert-manager-controller"


def available() -> bool:
    """Whether `make tools` built the controller and copied its CRDs."""
    return binary().exists() and CRDS.is_dir()


def install_crds(kube: KubeClient) -> None:
    """cert-manager.io's CRDs applied server-side and Established (ACME's are not needed:
    no ACME controller runs)."""
    files = sorted(CRDS.glob("cert-manager.io_*.yaml"))
    if not files:
        raise CertManagerError(f"no cert-manager CRDs in {CRDS}: run `make tools`")
    kube.kubectl("apply", "--server-side", "--force-conflicts", *[f"--filename={f}" for f in files])
    for name in CRD_NAMES:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


def remove_crds(kube: KubeClient) -> None:
    """Delete the CRDs (and with them every cert-manager object) and wait until they are
    gone, so that later tests see an apiserver without cert-manager. kubectl's own wait
    ends inside the harness's time limit for one kubectl call, so a slow deletion fails
    with kubectl's message rather than a killed process."""
    kube.kubectl("delete", "crd", *CRD_NAMES, "--ignore-not-found", "--wait=true", "--timeout=110s")


@dataclass
class CertManagerController(Started):
    """cert-manager's controller against ``kubeconfig``, its log in ``folder``; ready once
    its informers have synced (its /readyz)."""

    kubeconfig: Path
    folder: Path
    cluster_resource_namespace: str = "kube-system"
    controllers: Sequence[str] = CONTROLLERS
    extra_args: Sequence[str] = ()
    start_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = None
    ready_port: int = 0

    @property
    def log(self) -> Path:
        return self.folder / "cert-manager-controller.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "cert-manager controller not running"
        return self.process.pid

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ready_port = free_port()
        command = [
            str(binary()),
            f"--kubeconfig={self.kubeconfig}",
            f"--cluster-resource-namespace={self.cluster_resource_namespace}",
            "--leader-elect=false",
            f"--controllers={','.join(self.controllers)}",
            f"--ready-address=127.0.0.1:{self.ready_port}",
            *self.extra_args,
        ]
        self.process = spawn(command, self.log)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.ready_port}/readyz"
                with urllib.request.urlopen(url, timeout=1):
                    return
            time.sleep(0.1)
        self.stop()
        raise CertManagerError(f"not ready in {self.start_timeout:g}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise CertManagerError(f"cert-manager controller exited:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM as a pod gets, SIGKILL after a grace period."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

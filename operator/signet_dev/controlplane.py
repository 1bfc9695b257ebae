"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

kind needs a container engine and registry this project cannot assume, and a fake API
server would prove nothing about CRD schemas, CEL rules, RBAC or watch semantics. So tests
and `python -m signet_dev cluster up` run the genuine binaries, built from the Kubernetes Go
modules by `make tools`, as child processes in a temporary folder.

Teardown is the point of this module as much as startup: every child runs in its own
process group, is asked to die with its parent (PR_SET_PDEATHSIG) and is killed on
`stop()`; the temporary folder is removed even when startup fails half way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from signet_dev import credentials, kubeconfig

if TYPE_CHECKING:
    from signet_dev.node import LocalNode

_PR_SET_PDEATHSIG = 1
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message carries the tail of the failing log."""


def tools_bin() -> Path:
    """Where the Go-built tools live: ``$SIGNET_TOOLS_BIN``, else the checkout's
    ``.tools/bin`` (editable installs), else a folder on ``$PATH`` holding kube-apiserver."""
    explicit = os.environ.get("SIGNET_TOOLS_BIN")
    if explicit:
        return Path(explicit)
    checkout = Path(__file__).resolve().parents[2] / ".tools" / "bin"
    if (checkout / "kube-apiserver").exists():
        return checkout
    found = shutil.which("kube-apiserver")
    if found:
        return Path(found).parent
    raise ControlPlaneError(
        f"kube-apiserver not found in {checkout} or on PATH; run `make tools` first"
    )


def free_port() -> int:
    """A loopback port that was free a moment ago (startup retries on the rare race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """Runs in the child between fork and exec: if the test process dies, so does this."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own process group (so teardown can kill all it started) that dies
    with its parent, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


class Started:
    """``with thing:`` starts it and stops it again, even when the body fails: what every
    started-then-stopped helper here (control plane, fault proxy) offers."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalControlPlane(Started):
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports.

    Use as a context manager, or call ``start()`` and ``stop()``. ``kubeconfig`` is an
    admin kubeconfig (client certificate in ``system:masters``); authorization is
    ``Node,RBAC``, so any other identity gets exactly what RBAC grants it.
    """

    bin_dir: Path = field(default_factory=tools_bin)
    with_controller_manager: bool = True
    workdir: Path | None = None
    extra_apiserver_args: Sequence[str] = ()
    # A real kubelet node (signet_dev.node): needs root, containerd and runc.
    with_node: bool = False
    node: LocalNode | None = field(default=None, init=False)
    _children: list[_Child] = field(default_factory=list, init=False)
    _owns_workdir: bool = field(default=False, init=False)
    _creds: credentials.ControlPlaneCredentials | None = field(default=None, init=False)
    server: str = field(default="", init=False)
    etcd_endpoint: str = field(default="", init=False)

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None, "control plane not started"
        return self.workdir / "kubeconfig"

    def start(self, timeout: float = 90.0) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="signet-cluster-"))
            self._owns_workdir = True
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        assert self.workdir is not None
        deadline = time.monotonic() + timeout
        creds = self._creds = credentials.generate(self.workdir / "pki")
        self._start_etcd(deadline)
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_endpoint}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={creds.serving_cert}",
                f"--tls-private-key-file={creds.serving_key}",
                f"--client-ca-file={creds.ca_cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                # Off by default: the PodCertificateRequest API older kubelets still use.
                "--runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true",
                # Logs and exec reach the kubelet as the admin; its certificate is checked.
                f"--kubelet-client-certificate={creds.admin_cert}",
                f"--kubelet-client-key={creds.admin_key}",
                f"--kubelet-certificate-authority={creds.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={creds.sa_public_key}",
                f"--service-account-signing-key-file={creds.sa_signing_key}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
        )
        self._wait_ready(apiserver, deadline)
        kubeconfig.write(
            self.kubeconfig,
            server=self.server,
            ca_data=kubeconfig.file_data(creds.ca_cert),
            user=kubeconfig.client_certificate_user(creds.admin_cert, creds.admin_key),
            user_name="signet-admin",
        )
        if self.with_controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    f"--kubeconfig={self.kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    # The two cleaners delete finished certificate requests as real
                    # clusters do (PodCertificateRequests 15 minutes after creation), so
                    # Signet never deletes what it answered.
                    "--controllers=garbage-collector-controller,namespace-controller,"
                    "serviceaccount-controller,podcertificaterequest-cleaner-controller,"
                    "certificatesigningrequest-cleaner-controller",
                    "--concurrent-gc-syncs=5",
                    "--concurrent-namespace-syncs=5",
                ],
            )
        if self.with_node:
            self.start_node(timeout=max(deadline - time.monotonic(), 60.0))

    def start_node(self, timeout: float = 120.0) -> LocalNode:
        """Add the real kubelet node (once); tests call this lazily, so a session that runs
        no pod pays nothing for it."""
        if self.node is None:
            assert self.workdir is not None and self._creds is not None, "not started"
            # Imported here: node.py builds on this module.
            from signet_dev.node import LocalNode

            self.node = LocalNode(self.workdir / "node", self.bin_dir, self.server, self._creds)
            try:
                self.node.start(time.monotonic() + timeout)
            except BaseException:
                self.node.stop()
                self.node = None
                raise
        return self.node

    def _start_etcd(self, deadline: float) -> None:
        assert self.workdir is not None
        for _attempt in range(3):
            client, peer = free_port(), free_port()
            self.etcd_endpoint = f"http://127.0.0.1:{client}"
            etcd = self._spawn(
                "etcd",
                [
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={self.etcd_endpoint}",
                    f"--advertise-client-urls={self.etcd_endpoint}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                    "--quota-backend-bytes=8589934592",
                ],
            )
            while time.monotonic() < deadline:
                if etcd.process.poll() is not None:
                    break
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{self.etcd_endpoint}/health", timeout=1) as r,
                ):
                    if b'"health":"true"' in r.read():
                        return
                time.sleep(0.1)
            if etcd.process.poll() is None:
                raise ControlPlaneError(f"etcd did not become healthy:\n{etcd.log_tail()}")
            self._children.remove(etcd)
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        raise ControlPlaneError(f"etcd failed to start:\n{etcd.log_tail()}")

    def _wait_ready(self, apiserver: _Child, deadline: float) -> None:
        creds = self._creds
        assert creds is not None
        context = creds.admin_context()
        last = ""
        while time.monotonic() < deadline:
            if apiserver.process.poll() is not None:
                raise ControlPlaneError(f"kube-apiserver exited:\n{apiserver.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=context, timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                last = error.read().decode(errors="replace")[-500:]
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver not ready in time ({last}):\n{apiserver.log_tail()}"
        )

    def _spawn(self, name: str, args: list[str]) -> _Child:
        assert self.workdir is not None
        log = self.workdir / f"{name}.log"
        child = _Child(name, spawn([str(self.bin_dir / name), *args], log), log)
        self._children.append(child)
        return child

    def pid_of(self, name: str) -> int:
        """The process id of a running component, for benchmarks that account CPU per process
        and fault tests that freeze one."""
        return next(c.process.pid for c in self._children if c.name == name)

    def log_of(self, name: str) -> Path:
        """The log file of a component, for tests that want to show why something failed."""
        assert self.workdir is not None
        return self.workdir / f"{name}.log"

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        """Stop and start kube-apiserver with the same flags (fault tests reuse etcd)."""
        child = next(c for c in self._children if c.name == "kube-apiserver")
        args = list(child.process.args)  # type: ignore[arg-type]
        _terminate(child.process)
        self._children.remove(child)
        new = self._spawn("kube-apiserver", [str(a) for a in args[1:]])
        self._wait_ready(new, time.monotonic() + timeout)

    def stop(self) -> None:
        """Kill every child (newest first) and remove the folder we created."""
        if self.node is not None:
            self.node.stop()
            self.node = None
        while self._children:
            _terminate(self._children.pop().process)
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

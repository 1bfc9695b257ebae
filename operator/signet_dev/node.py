"""One real Kubernetes node for the local control plane: kubelet + containerd + runc.

Signet exists so that pods mount what it issues; only a real kubelet proves that a Secret
volume carries the files, that renewals reach a running pod, and that the chart's
Deployment runs. kind would need a container engine and a registry; this node needs
neither. containerd and runc come from the distribution, the kubelet is built from the same
Kubernetes module as the apiserver, and the node's images (our workload binary, which also
serves as the pod sandbox) are packed here and imported into containerd, as is any other
image packed with ``pack_image`` (the operator's: ``signet_dev.operator_image``). Pods use
host networking, so no CNI plugin is needed.

The kubelet assumes it owns the machine, and this module's job is to stop it from changing
anything outside the node's temporary folder:

- it runs in its own mount namespace where the host sysctls it insists on writing
  (``vm.overcommit_memory``, ``kernel.panic``, ...) are private copies;
- its root folder is a shared mount, so the volumes it mounts there still reach
  containerd in the host namespace;
- ``stop()`` kills every container, unmounts everything under the folder, removes the
  ``kubepods`` cgroups and the few fixed paths (``/run/containerd``,
  ``/var/log/containers``, the device-plugins socket) that only existed because of us.

The kubelet binds fixed paths and ports (its device-plugins socket, port 10250), so one
machine runs one node at a time: ``start()`` takes a machine-wide lock (``NODE_LOCK``) and
waits for it, so a second test session queues behind the first instead of breaking both.
It needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from signet_dev import credentials, kubeconfig
from signet_dev.controlplane import (
    ControlPlaneError,
    _Child,
    _terminate,
    free_port,
    spawn,
)

NODE_NAME = "signet-node"
WORKLOAD_IMAGE = "signet.local/workload:dev"
# containerd's sandbox image: the workload binary again, started as `pause`.
PAUSE_IMAGE = "signet.local/pause:dev"
KUBELET_PORT = 10250
NODE_LOCK = Path("/run/signet-node.lock")
"""Held by the one running node on this machine (flock, released when its holder exits)."""
LOCK_WAIT = 1800.0
"""How long a node start queues behind another session's node before giving up."""
NOT_READY_TOLERATION = {"operator": "Exists"}
# The host-wide sysctls the kubelet sets at start-up; in its namespace they are files.
_KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
_CONTAINER_LOGS = Path("/var/log/containers")
_CONTAINERD_RUN = Path("/run/containerd")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the node, or None if it can: tests skip with this text
    instead of failing on a laptop without root or containerd."""
    if os.geteuid() != 0:
        return "a kubelet node needs root (mounts, cgroups, containerd)"
    for tool in ("containerd", "runc", "ctr", "unshare", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install containerd runc)"
    if _kubelet_listening() and not node_lock_held():
        # Not one of ours (ours hold the lock, and start() queues behind them).
        return "another kubelet is running on this machine"
    return None


def _kubelet_listening() -> bool:
    """Whether a kubelet answers on its device-plugin socket. The socket file outlives a
    kubelet that was killed, so only a live listener counts."""
    path = _DEVICE_PLUGINS / "kubelet.sock"
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def node_lock_held() -> bool:
    """Whether another test session's node holds ``NODE_LOCK`` right now."""
    if not NODE_LOCK.exists():
        return False
    fd = os.open(NODE_LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def node_ip() -> str:
    """The machine's first non-loopback IPv4 address: the kubelet refuses a loopback node
    IP, and it is the only other address anything here listens on."""
    explicit = os.environ.get("SIGNET_NODE_IP")
    if explicit:
        return explicit
    output = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for interface in json.loads(output):
        for address in interface.get("addr_info", []):
            if address.get("local"):
                return str(address["local"])
    raise ControlPlaneError("no non-loopback IPv4 address for the kubelet's node IP")


def _go_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class Content:
    """A file an image gets that exists nowhere on the host (``/etc/passwd``, a rewritten
    script)."""

    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    """A symbolic link pointing where the image needs it to, not where the host's does."""

    target: str


@dataclass(frozen=True)
class Directory:
    """A folder of its own mode (``/tmp``'s 1777); other folders are made 0755 as needed."""

    mode: int = 0o755


ImageEntry = Path | Content | Symlink | Directory
"""A host path (its file, symlink or folder itself, never its contents) or made-up content."""
Layer = Mapping[str, ImageEntry]
"""One image layer: absolute paths in the image to what goes there."""


def pack_image(
    layers: Sequence[Layer],
    tag: str,
    out: Path,
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    user: str = "",
    working_dir: str = "/",
    extra_config: Mapping[str, Any] | None = None,
) -> Path:
    """A docker-archive (what ``ctr images import`` reads) of ``layers``, built from files
    on this machine so that no base image or registry is involved.

    Files keep their host mode and modification time (a ``.pyc`` is only valid next to a
    source of the same mtime), are owned by root and made world-readable: an image holds no
    secrets, and its containers run as any uid. Parent folders are added as needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    diff_ids: list[str] = []
    layer_files: list[Path] = []
    try:
        for index, layer in enumerate(layers):
            layer_file = out.with_name(f"{out.name}.layer{index}.tmp")
            layer_files.append(layer_file)
            diff_ids.append(_write_layer(layer, layer_file))
        config = {
            "architecture": _go_arch(),
            "os": "linux",
            "config": {
                "Entrypoint": list(entrypoint),
                **({"Cmd": list(cmd)} if cmd else {}),
                **({"Env": list(env)} if env else {}),
                **({"User": user} if user else {}),
                "WorkingDir": working_dir,
                **(extra_config or {}),
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
            "history": [
                {"created_by": f"signet pack_image {tag} layer {i}"} for i in range(len(layers))
            ],
        }
        config_bytes = json.dumps(config).encode()
        config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
        layer_names = [f"{diff_id}/layer.tar" for diff_id in diff_ids]
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]
        partial = out.with_name(f"{out.name}.tmp")
        with tarfile.open(partial, mode="w") as archive:
            for name, layer_file in zip(layer_names, layer_files, strict=True):
                archive.add(layer_file, arcname=name)
            for name, content in (
                (config_name, config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                entry = tarfile.TarInfo(name)
                entry.size = len(content)
                archive.addfile(entry, io.BytesIO(content))
        partial.replace(out)
    finally:
        for layer_file in layer_files:
            layer_file.unlink(missing_ok=True)
    return out


def _write_layer(layer: Layer, out: Path) -> str:
    """Write one layer tar (parents before children) and return its sha256 (its diff id)."""
    wanted = {PurePosixPath(path).relative_to("/"): entry for path, entry in layer.items()}
    parents = {parent for path in wanted for parent in path.parents if parent.parts}
    paths = sorted(wanted.keys() | parents, key=lambda p: p.parts)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in paths:
            entry = wanted.get(path, Directory())
            name = str(path)
            if isinstance(entry, Path):
                info = archive.gettarinfo(str(entry), arcname=name)
                if info.isdir():
                    info.mode |= 0o555
                elif info.isreg() or info.islnk():
                    info.mode |= 0o444
            else:
                info = tarfile.TarInfo(name)
                if isinstance(entry, Content):
                    info.size, info.mode = len(entry.data), entry.mode
                elif isinstance(entry, Symlink):
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                else:
                    info.type, info.mode = tarfile.DIRTYPE, entry.mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if isinstance(entry, Path) and info.isreg():
                with entry.open("rb") as data:
                    archive.addfile(info, data)
            elif isinstance(entry, Content):
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                archive.addfile(info)
    digest = hashlib.sha256()
    with out.open("rb") as written:
        while chunk := written.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LocalNode:
    """kubelet + containerd registered as ``NODE_NAME`` with the control plane at ``server``.

    Pods run on it by setting ``nodeName`` (no scheduler runs), ``hostNetwork: true`` and
    the ``NOT_READY_TOLERATION`` (no node-lifecycle controller removes the taint the kubelet
    registers with), using ``WORKLOAD_IMAGE`` with ``imagePullPolicy: Never``.
    """

    workdir: Path
    bin_dir: Path
    server: str
    creds: credentials.ControlPlaneCredentials
    name: str = NODE_NAME
    ip: str = ""
    _children: list[_Child] = field(default_factory=list, init=False)
    _preexisting: dict[Path, bool] = field(default_factory=dict, init=False)
    _container_logs_before: set[str] = field(default_factory=set, init=False)
    _lock: int | None = field(default=None, init=False)

    @property
    def kubelet_root(self) -> Path:
        """Where the kubelet keeps pods and their volumes (``pods/<uid>/volumes/...``)."""
        return self.workdir / "kubelet"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def start(self, deadline: float) -> None:
        reason = unavailable_reason()
        if reason:
            raise ControlPlaneError(f"cannot start a node: {reason}")
        self.ip = self.ip or node_ip()
        waited = self._take_lock()
        deadline += waited
        for path in (_DEVICE_PLUGINS.parent, _CONTAINER_LOGS, _CONTAINERD_RUN):
            self._preexisting[path] = path.exists()
        if _CONTAINER_LOGS.exists():
            self._container_logs_before = set(os.listdir(_CONTAINER_LOGS))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_containerd(deadline)
        self._import_images()
        self._start_kubelet()
        self._wait_ready(deadline)

    def _take_lock(self) -> float:
        """Wait until no other node runs on this machine; returns the seconds waited, which
        do not count against the start's own deadline."""
        fd = os.open(NODE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        began = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() - began > LOCK_WAIT:
                    os.close(fd)
                    raise ControlPlaneError(
                        f"another node holds {NODE_LOCK} (one kubelet per machine)"
                    ) from None
                time.sleep(0.5)
                continue
            self._lock = fd
            return time.monotonic() - began

    # containerd ---------------------------------------------------------------------------

    def _start_containerd(self, deadline: float) -> None:
        folder = self.workdir / "containerd"
        cni_conf, cni_bin = self.workdir / "cni" / "conf", self.workdir / "cni" / "bin"
        for path in (folder, cni_conf, cni_bin):
            path.mkdir(parents=True, exist_ok=True)
        # Only loopback: pods use host networking; the file makes the runtime report its
        # network ready, which the node's Ready condition waits for.
        (cni_conf / "10-loopback.conflist").write_text(
            json.dumps(
                {"cniVersion": "0.4.0", "name": "loopback", "plugins": [{"type": "loopback"}]}
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{folder / "root"}"
state = "{folder / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Writing oom_score_adj needs CAP_SYS_RESOURCE, which sandboxed VMs do not grant.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
[{cri}.containerd]
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"""
        (folder / "config.toml").write_text(config)
        child = self._spawn("containerd", ["containerd", f"--config={folder / 'config.toml'}"])
        while not self.containerd_socket.exists() or self._ctr("version", check=False):
            if child.process.poll() is not None:
                raise ControlPlaneError(f"containerd exited:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"containerd not ready in time:\n{child.log_tail()}")
            time.sleep(0.1)

    def _ctr(self, *args: str, check: bool = True) -> int:
        """Run ``ctr`` in the CRI namespace; returns the exit code (0 = success)."""
        result = subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.returncode

    def _import_images(self) -> None:
        binary = self.bin_dir / "signet-workload"
        if not binary.exists():
            raise ControlPlaneError(f"{binary} not found; run `make tools` first")
        images = self.workdir / "images"
        images.mkdir(exist_ok=True)
        for tag, entrypoint in (
            (PAUSE_IMAGE, ["/signet-workload", "pause"]),
            (WORKLOAD_IMAGE, ["/signet-workload"]),
        ):
            archive = pack_image(
                [{"/signet-workload": binary}],
                tag,
                images / f"{tag.split('/')[-1]}.tar",
                entrypoint=entrypoint,
            )
            self.import_image(archive)

    def import_image(self, archive: Path) -> None:
        """Make a docker-archive's image (``pack_image``) runnable here: the node pulls
        nothing, so pods name it with ``imagePullPolicy: Never``."""
        self._ctr("images", "import", str(archive))

    # kubelet ------------------------------------------------------------------------------

    def _start_kubelet(self) -> None:
        folder = self.workdir / "kubelet-config"
        folder.mkdir(exist_ok=True)
        client_cert, client_key = credentials.issue_leaf(
            self.creds,
            folder,
            "kubelet-client",
            common_name=f"system:node:{self.name}",
            organization="system:nodes",
        )
        serving_cert, serving_key = credentials.issue_leaf(
            self.creds,
            folder,
            "kubelet-serving",
            common_name=self.name,
            server=True,
            ip_addresses=(self.ip,),
        )
        kubeconfig.write(
            folder / "kubeconfig",
            server=self.server,
            ca_data=kubeconfig.file_data(self.creds.ca_cert),
            user=kubeconfig.client_certificate_user(client_cert, client_key),
            user_name=f"system:node:{self.name}",
        )
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # Refused by default since 1.35; these VMs mount cgroup v1 and v2 side by side.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(serving_cert),
            "tlsPrivateKeyFile": str(serving_key),
            # Only the apiserver (with the admin client certificate) calls the kubelet.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.creds.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDirectory": str(self.workdir / "pod-logs"),
            "failSwapOn": False,
            # Renewed Secrets reach volumes on the next pod sync; keep that prompt.
            "syncFrequency": "5s",
            # A test machine's disk is not the node's to manage: never evict, never
            # garbage-collect the imported images (they cannot be pulled again).
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "0%",
                "imagefs.available": "0%",
                "nodefs.inodesFree": "0%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "resolvConf": "",
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        self.kubelet_root.mkdir(exist_ok=True)
        # A shared mount: volume mounts the kubelet makes from its own namespace propagate
        # to the host namespace, where containerd hands them to containers.
        subprocess.run(
            ["mount", "--bind", str(self.kubelet_root), str(self.kubelet_root)], check=True
        )
        subprocess.run(["mount", "--make-rshared", str(self.kubelet_root)], check=True)
        sysctls = self.workdir / "sysctl"
        sysctls.mkdir(exist_ok=True)
        binds = []
        for name in _KUBELET_SYSCTLS:
            host = Path("/proc/sys") / name
            if host.exists():
                private = sysctls / name.replace("/", ".")
                private.write_text(host.read_text())
                binds.append(f'mount --bind "{private}" "{host}"')
        script = " && ".join(["mount --make-rprivate /proc", *binds, 'exec "$@"'])
        kubelet = [
            str(self.bin_dir / "kubelet"),
            f"--config={folder / 'config.yaml'}",
            f"--kubeconfig={folder / 'kubeconfig'}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={folder}",
            f"--node-ip={self.ip}",
            f"--hostname-override={self.name}",
            "--v=1",
        ]
        self._spawn(
            "kubelet",
            ["unshare", "-m", "--propagation", "unchanged", "sh", "-c", script, "sh", *kubelet],
        )

    def _wait_ready(self, deadline: float) -> None:
        context = self.creds.admin_context()
        kubelet = next(c for c in self._children if c.name == "kubelet")
        last = "not registered"
        while time.monotonic() < deadline:
            if kubelet.process.poll() is not None:
                raise ControlPlaneError(f"kubelet exited:\n{kubelet.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.server}/api/v1/nodes/{self.name}", context=context, timeout=5
                ) as response:
                    node = json.load(response)
                ready: dict[str, Any] = next(
                    (
                        c
                        for c in node.get("status", {}).get("conditions", [])
                        if c["type"] == "Ready"
                    ),
                    {},
                )
                if ready.get("status") == "True":
                    return
                last = f"Ready={ready.get('status')}: {ready.get('message')}"
            except (OSError, urllib.error.HTTPError) as error:
                last = str(error)
            time.sleep(0.2)
        raise ControlPlaneError(f"node not Ready in time ({last}):\n{kubelet.log_tail()}")

    def _spawn(self, name: str, command: list[str]) -> _Child:
        log = self.workdir / f"{name}.log"
        child = _Child(name, spawn(command, log), log)
        self._children.append(child)
        return child

    # teardown -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the kubelet, then every container, then containerd, and remove every trace
        outside the folder; each step tolerates what an earlier failure left half done.
        Without the lock there is nothing of ours to stop, and the machine's pods and
        paths may belong to another session's node."""
        if self._lock is None:
            return
        kubelet = next((c for c in self._children if c.name == "kubelet"), None)
        if kubelet is not None:
            _terminate(kubelet.process)
            self._children.remove(kubelet)
        self._kill_pod_processes()
        while self._children:
            _terminate(self._children.pop().process)
        self._kill_leftover_shims()
        self._unmount_all()
        self._remove_cgroups()
        self._remove_fixed_paths()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _kill_pod_processes(self) -> None:
        """SIGKILL everything in the ``kubepods`` cgroups: faster and surer than asking
        containerd container by container, and the pods do not outlive the test bed anyway."""
        for _attempt in range(50):
            pids = {
                int(pid)
                for procs in _CGROUP_ROOT.glob("*/kubepods/**/cgroup.procs")
                for pid in _read(procs).split()
            }
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_leftover_shims(self) -> None:
        """Shims outlive containerd by design; ours name our socket on their command line."""
        marker = str(self.containerd_socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        prefix = str(self.workdir)
        for _attempt in range(3):
            targets = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
            ]
            if not targets:
                return
            for target in sorted(targets, key=len, reverse=True):
                if subprocess.run(["umount", target], capture_output=True, check=False).returncode:
                    subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        """rmdir the kubelet's ``kubepods`` hierarchy in every controller, deepest first
        (a cgroup folder can only be removed once it is empty of processes and children)."""
        if not _CGROUP_ROOT.exists():
            return
        for controller in _CGROUP_ROOT.iterdir():
            top = controller / "kubepods"
            if not top.is_dir():
                continue
            folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for folder in [*folders, top]:
                for _attempt in range(20):
                    try:
                        folder.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)

    def _remove_fixed_paths(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (_DEVICE_PLUGINS / "kubelet.sock").unlink()
        if not self._preexisting.get(_DEVICE_PLUGINS.parent, True):
            shutil.rmtree(_DEVICE_PLUGINS.parent, ignore_errors=True)
        if not self._preexisting.get(_CONTAINERD_RUN, True):
            shutil.rmtree(_CONTAINERD_RUN, ignore_errors=True)
        if _CONTAINER_LOGS.exists():
            if not self._preexisting.get(_CONTAINER_LOGS, True):
                shutil.rmtree(_CONTAINER_LOGS, ignore_errors=True)
            else:
                for name in set(os.listdir(_CONTAINER_LOGS)) - self._container_logs_before:
                    with contextlib.suppress(OSError):
                        (_CONTAINER_LOGS / name).unlink()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def pod_manifest(
    name: str,
    namespace: str,
    args: list[str],
    *,
    volumes: Sequence[dict[str, Any]] = (),
    mounts: Sequence[dict[str, Any]] = (),
    service_account: str | None = None,
) -> dict[str, Any]:
    """A pod of the workload image that the node runs as is: bound to it, host network,
    tolerating the not-ready taint, never pulling."""
    spec: dict[str, Any] = {
        "nodeName": NODE_NAME,
        "hostNetwork": True,
        "tolerations": [NOT_READY_TOLERATION],
        "automountServiceAccountToken": False,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "workload",
                "image": WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
                "args": args,
                "volumeMounts": list(mounts),
                "securityContext": {"readOnlyRootFilesystem": True},
            }
        ],
        "volumes": list(volumes),
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }

"""What a Deployment's pods need from the test bed beyond the control plane and the node.

The base test bed runs the controllers Signet's own tests need (garbage collector,
namespaces, ServiceAccounts) and pods that name their node. A Helm chart's Deployment
needs more, and in a real cluster other components provide it:

- the deployment and replicaset controllers turn the Deployment into a pod, and the root
  CA publisher writes the ``kube-root-ca.crt`` ConfigMap every ServiceAccount token volume
  projects (a second kube-controller-manager, running only those);
- a scheduler binds the pod to the node: :class:`OneNodeScheduler` binds a pending pod
  when the node's labels satisfy its ``nodeSelector`` and its tolerations cover the node's
  taints (the kubelet registers with a not-ready taint nothing here removes), the checks a
  real scheduler starts with, so values that would leave the pod pending in a real cluster
  leave it pending here too;
- the ``kubernetes`` Service: an in-cluster client (kopf's) reaches the API server as
  ``https://kubernetes.default.svc`` (port 443, which the apiserver's certificate names).
  There is no cluster DNS or kube-proxy here, so :class:`ServiceForwarder` does kube-proxy's
  job for that one Service, relaying TCP from ``KUBERNETES_SERVICE_IP:443`` (an address on
  loopback, reachable from host-network pods) to the apiserver, and :attr:`host_aliases`
  is the ``/etc/hosts`` entry a pod adds to find it. TLS is end to end: the apiserver sees
  the pod's own ServiceAccount token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes

from signet_dev import kubeconfig
from signet_dev.controlplane import (
    ControlPlaneError,
    LocalControlPlane,
    Started,
    _Child,
    _terminate,
    spawn,
)
from signet_dev.kube import api_client

KUBERNETES_SERVICE_IP = "127.0.96.1"
"""Where the forwarder listens: loopback (all of 127/8 is), but not 127.0.0.1, whose port
443 a developer's own software may hold; .96.1 echoes the ``kubernetes`` Service's
ClusterIP in the apiserver's ``--service-cluster-ip-range``."""
KUBERNETES_SERVICE_NAME = "kubernetes.default.svc"
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "root-ca-certificate-publisher-controller",
)
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


class ServiceForwarder:
    """A TCP relay from ``listen`` to ``target``: kube-proxy for one Service."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            self._server = socket.create_server(self.listen)
        except OSError as error:
            raise ControlPlaneError(
                f"cannot listen on {self.listen[0]}:{self.listen[1]} for the kubernetes "
                f"Service: {error}"
            ) from None
        threading.Thread(target=self._accept, name="kubernetes-service", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the accept loop (close alone may not)
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            for connection in self._open:  # wakes the relays, which close them
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        server = self._server
        assert server is not None
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by stop()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        answers = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        answers.start()
        _pump(client, upstream)
        answers.join()
        with self._lock:
            for connection in (client, upstream):
                connection.close()
                self._open.discard(connection)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until EOF and pass the EOF on (a half-close: a client that has
    finished sending still reads the answer); on an error, cut both directions."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for connection in (source, sink):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class OneNodeScheduler:
    """Binds pending pods that fit ``node`` to it, as often as ``interval`` allows.

    Only the first checks of a real scheduler: ``nodeSelector`` against the node's labels,
    tolerations against its NoSchedule/NoExecute taints. A pod with required node affinity
    is left pending (not understood here, so not bound). No resources are counted: one
    node, one test at a time."""

    def __init__(self, api: kubernetes.client.ApiClient, node: str, interval: float = 0.2):
        self.core = kubernetes.client.CoreV1Api(api)
        self.node = node
        self.interval = interval
        self.bound: list[str] = []
        """``namespace/name`` of every pod bound, in order."""
        self.last_error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="one-node-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.schedule_once()
            except Exception as error:  # keep scheduling; a test's timeout shows this
                self.last_error = f"{type(error).__name__}: {error}"

    def schedule_once(self) -> None:
        node = _json(self.core.read_node(self.node, _preload_content=False))
        pending = _json(
            self.core.list_pod_for_all_namespaces(
                field_selector="spec.nodeName=,status.phase=Pending", _preload_content=False
            )
        )
        for pod in pending.get("items", []):
            if fits(pod, node):
                self._bind(pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _bind(self, namespace: str, name: str) -> None:
        binding = kubernetes.client.V1Binding(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            target=kubernetes.client.V1ObjectReference(
                api_version="v1", kind="Node", name=self.node
            ),
        )
        try:
            # The client cannot read the answer back into a model (a known quirk), and
            # the answer carries nothing needed.
            self.core.create_namespaced_pod_binding(
                name, namespace, binding, _preload_content=False
            )
        except kubernetes.client.ApiException as error:
            if error.status == 409:  # bound meanwhile (or already gone): nothing to do
                return
            raise
        self.bound.append(f"{namespace}/{name}")


def fits(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether a scheduler may bind ``pod`` to ``node`` (see :class:`OneNodeScheduler`)."""
    spec = pod.get("spec", {})
    labels = node.get("metadata", {}).get("labels", {})
    if any(labels.get(key) != value for key, value in spec.get("nodeSelector", {}).items()):
        return False
    affinity = spec.get("affinity", {}).get("nodeAffinity", {})
    if affinity.get("requiredDuringSchedulingIgnoredDuringExecution"):
        return False
    tolerations = spec.get("tolerations", [])
    return all(
        tolerates(tolerations, taint)
        for taint in node.get("spec", {}).get("taints", [])
        if taint.get("effect") in ("NoSchedule", "NoExecute")
    )


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Kubernetes' toleration rule: same effect (or none given), and ``Exists`` on the key
    (or on every key when it has none) or ``Equal`` on key and value."""
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator", "Equal") == "Exists":
            if toleration.get("key") in (None, "", taint.get("key")):
                return True
        elif toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get(
            "value", ""
        ):
            return True
    return False


def _json(response: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.data)
    return loaded


@dataclass
class WorkloadSupport(Started):
    """The controllers, scheduler and ``kubernetes`` Service of a started ``plane`` whose
    node is up; ``with WorkloadSupport(plane):`` runs them for as long as the block does."""

    plane: LocalControlPlane
    start_timeout: float = 60.0
    scheduler: OneNodeScheduler | None = field(default=None, init=False)
    _forwarder: ServiceForwarder | None = field(default=None, init=False)
    _controllers: _Child | None = field(default=None, init=False)

    @property
    def folder(self) -> Path:
        assert self.plane.workdir is not None, "control plane not started"
        return self.plane.workdir / "workloads"

    @property
    def host_aliases(self) -> list[dict[str, Any]]:
        """The pod's ``hostAliases`` entry that makes ``kubernetes.default.svc`` resolve
        to the forwarder (no cluster DNS answers for it here)."""
        return [{"ip": KUBERNETES_SERVICE_IP, "hostnames": [KUBERNETES_SERVICE_NAME]}]

    @property
    def controllers_log(self) -> Path:
        return self.folder / "kube-controller-manager.log"

    def start(self) -> None:
        node = self.plane.node
        if node is None:
            raise ControlPlaneError("start the node first: there is nowhere to run pods")
        try:
            self._start(node.name)
        except BaseException:
            self.stop()
            raise

    def _start(self, node_name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        server, ca_data = kubeconfig.read_server_and_ca(self.plane.kubeconfig)
        root_ca = self.folder / "root-ca.crt"
        root_ca.write_bytes(base64.b64decode(ca_data))
        self._controllers = _Child(
            "kube-controller-manager",
            spawn(
                [
                    str(self.plane.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={self.plane.kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    f"--controllers={','.join(CONTROLLERS)}",
                    f"--root-ca-file={root_ca}",
                ],
                self.controllers_log,
            ),
            self.controllers_log,
        )
        address = urlsplit(server)
        assert address.hostname is not None and address.port is not None, server
        self._forwarder = ServiceForwarder(
            (KUBERNETES_SERVICE_IP, 443), (address.hostname, address.port)
        )
        self._forwarder.start()
        api = api_client(self.plane.kubeconfig)
        self.scheduler = OneNodeScheduler(api, node_name)
        self.scheduler.start()
        self._wait_published(kubernetes.client.CoreV1Api(api))

    def _wait_published(self, core: kubernetes.client.CoreV1Api) -> None:
        """Up means the CA publisher has written ``default``'s ConfigMap: it started."""
        controllers = self._controllers
        assert controllers is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if controllers.process.poll() is not None:
                raise ControlPlaneError(
                    f"kube-controller-manager exited:\n{controllers.log_tail()}"
                )
            try:
                core.read_namespaced_config_map(ROOT_CA_CONFIGMAP, "default")
                return
            except kubernetes.client.ApiException as error:
                if error.status != 404:
                    raise
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{ROOT_CA_CONFIGMAP} not published in time:\n{controllers.log_tail()}"
        )

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None
        if self._controllers is not None:
            _terminate(self._controllers.process)
            self._controllers = None

    def diagnostics(self) -> str:
        """What a test shows when a pod did not come up: what was bound, the scheduler's
        last error and the controllers' last words."""
        scheduler = self.scheduler
        lines = [
            f"scheduler bound: {scheduler.bound if scheduler else '(stopped)'}",
            f"scheduler last error: {(scheduler.last_error if scheduler else '') or 'none'}",
        ]
        if self._controllers is not None:
            lines.append(f"kube-controller-manager:\n{self._controllers.log_tail()}")
        return "\n".join(lines)

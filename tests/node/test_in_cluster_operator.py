"""The Helm chart's Deployment runs the operator on the node, and the identities it issues
from inside the cluster carry mutual TLS between pods.

Everything else in the suite runs ``signet run`` as a child process with a kubeconfig; here
no operator runs outside the cluster (one the session started is stopped for the module),
so whatever gets issued was issued by the pod. The image is
``signet_dev.operator_image``'s: the Dockerfile's layout assembled from this machine's
Python, imported into the node's containerd (no registry). The chart is installed as a user
would install it, plus what this node needs: the local image with ``pullPolicy: Never``,
``nodeSelector`` and a toleration for the node's not-ready taint, host networking (the node
has no pod network) and a ``hostAliases`` entry for ``kubernetes.default.svc``
(``signet_dev.workloads`` stands in for cluster DNS and kube-proxy, the controllers that
turn a Deployment into a pod and the scheduler).

Claims: (a) the Deployment becomes available on the node, its pod running the image as uid
65532 and holding the chart's ServiceAccount token and no other credential; (b) the
examples/mtls-spiffe identities it issues let two workload pods authenticate each other;
(c) each Secret's certificate is one whose signature the pod's own audit stream (its log,
read through the apiserver) records, in an unbroken chain: a certificate signed by any
other process would not be there.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography import x509

from signet.kms.emulator import EmulatorServer
from signet.observe.audit import SIGNATURE, parse_record
from signet.observe.audit_check import from_log, lines_of, verify
from signet_dev.controlplane import free_port
from signet_dev.kubeconfig import read_server_and_ca
from signet_dev.node import LocalNode
from signet_dev.operator_image import OperatorImage, build_operator_image
from signet_dev.pods import wait_status
from signet_dev.workloads import WorkloadSupport
from tests.chart.helm import CHART, helm
from tests.kube import Kube, eventually
from tests.node.pods import (
    example_objects,
    mtls_client_pod,
    mtls_server_pod,
    run_pod,
    spiffe_id,
    volume_path,
)
from tests.operator.harness import OperatorProcess, secret_data, wait_condition

# The first test's setup may build the image's dependency virtualenv (a minute; several on
# a busy two-core machine) on top of starting the node.
pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(600)]

RELEASE = "signet"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UID = 65532


# No operator outside the cluster --------------------------------------------------------


def operators_outside(kube: Kube) -> dict[int, str]:
    """``signet run`` processes on this machine logged in to this cluster with a
    kubeconfig (pid: command line): every launcher passes ``--kubeconfig``, and the pod,
    which logs in with its ServiceAccount token, passes none."""
    server, _ = read_server_and_ca(kube.kubeconfig)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "run" not in argv or not any("signet" in a for a in argv):
            continue
        for arg in argv:
            if arg.startswith("--kubeconfig="):
                try:
                    text = Path(arg.split("=", 1)[1]).read_text()
                except OSError:
                    continue
                if server in text:
                    found[int(entry.name)] = " ".join(argv).strip()
    return found


@pytest.fixture(scope="module")
def no_operator_outside(request: pytest.FixtureRequest, crds: Kube) -> Iterator[None]:
    """The session's out-of-cluster operator (``signet_operator``) stopped while this module
    runs and started again after it (other modules expect it running); any other operator
    against this cluster fails the module rather than being killed: it is not ours."""
    stopped: OperatorProcess | None = None
    if operators_outside(crds):
        stopped = request.getfixturevalue("signet_operator")
        stopped.stop()
    others = operators_outside(crds)
    assert not others, f"operators outside the cluster would sign too: {others}"
    yield
    if stopped is not None:
        stopped.start()


# The image, the node's missing pieces, the release ----------------------------------------


@pytest.fixture(scope="module")
def operator_image(node: LocalNode) -> OperatorImage:
    image = build_operator_image()
    began = time.monotonic()
    node.import_image(image.archive)
    print(
        f"\n{image.reference}: {'built' if image.built else 'cached'} in {image.seconds:.1f}s, "
        f"{image.size / 2**20:.0f} MiB, imported in {time.monotonic() - began:.1f}s"
    )
    return image


@pytest.fixture(scope="module")
def workloads(kube: Kube, node: LocalNode) -> Iterator[WorkloadSupport]:
    assert kube.plane is not None  # the node fixture skips otherwise
    with WorkloadSupport(kube.plane) as support:
        yield support


@dataclass(frozen=True)
class Release:
    namespace: str
    deployment: str
    service_account: str
    """The one the chart created."""
    pod: Any  # V1Pod of the operator, once Ready


SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=signet"
"""The chart's labels on everything of the release (names are the chart's business)."""


def operator_pods(kube: Kube, namespace: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(namespace, label_selector=SELECTOR).items)


def _why_not_available(kube: Kube, namespace: str, node: LocalNode, support: Any) -> str:
    """Everything that explains a Deployment that never became available."""
    lines = []
    for pod in operator_pods(kube, namespace):
        lines.append(f"pod {pod.metadata.name}: {pod.status}")
        if pod.status.container_statuses:
            try:
                log = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace)
                lines.append(f"its log:\n{log[-3000:]}")
            except kubernetes.client.ApiException as error:
                lines.append(f"no log: {error.reason}")
    events = kube.core.list_namespaced_event(namespace).items
    lines += [
        f"event {e.involved_object.kind}/{e.involved_object.name}: {e.message}" for e in events
    ]
    lines.append(support.diagnostics())
    lines.append((node.workdir / "kubelet.log").read_text(errors="replace")[-2000:])
    return "\n".join(lines)


@pytest.fixture(scope="module")
def in_cluster_operator(
    crds: Kube,
    node: LocalNode,
    no_operator_outside: None,
    operator_image: OperatorImage,
    workloads: WorkloadSupport,
    kms_emulator: EmulatorServer,
) -> Iterator[Release]:
    """The chart installed in a namespace of its own and its Deployment available (the
    readiness probe passed); uninstalled afterwards, and waited for until its pod is gone,
    so the next module's operator never overlaps with it."""
    namespace = f"signet-{uuid.uuid4().hex[:8]}"
    crds.core.create_namespace({"metadata": {"name": namespace}})
    values = {
        "image": {
            "repository": operator_image.repository,
            "tag": operator_image.tag,
            "pullPolicy": "Never",
        },
        "crds": {"enabled": False},  # the session's `crds` fixture owns them
        "kms": {"emulatorAddress": kms_emulator.address},
        "nodeSelector": {"kubernetes.io/hostname": node.name},
        "tolerations": [{"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
        "hostNetwork": True,
        "hostAliases": workloads.host_aliases,
        # The node's ports: take free ones.
        "health": {"port": free_port()},
        "metrics": {"port": free_port()},
        "readinessProbe": {"initialDelaySeconds": 1, "periodSeconds": 1},
    }
    helm("install", RELEASE, str(CHART), "-n", namespace, values=values, kubeconfig=crds.kubeconfig)
    apps: Any = kubernetes.client.AppsV1Api(crds.api)  # typed as KubeClient's APIs are
    try:
        (deployment,) = apps.list_namespaced_deployment(namespace, label_selector=SELECTOR).items
        name = deployment.metadata.name
        (account,) = crds.core.list_namespaced_service_account(
            namespace, label_selector=SELECTOR
        ).items

        def available() -> bool:
            status = apps.read_namespaced_deployment(name, namespace).status
            return bool(status.available_replicas == 1)

        try:
            eventually(available, timeout=120, interval=0.5, what=f"Deployment {name}")
        except AssertionError as error:
            why = _why_not_available(crds, namespace, node, workloads)
            raise AssertionError(f"{error}\n{why}") from None
        (pod,) = operator_pods(crds, namespace)
        yield Release(namespace, name, account.metadata.name, pod)
    finally:
        helm("uninstall", RELEASE, "-n", namespace, kubeconfig=crds.kubeconfig, check=False)
        eventually(
            lambda: not operator_pods(crds, namespace),
            timeout=90,
            interval=0.5,
            what="the operator pod gone after helm uninstall",
        )
        crds.core.delete_namespace(namespace)


# (a) the Deployment on the node ---------------------------------------------------------


def _pod_processes(pod_uid: str) -> dict[int, str]:
    """Processes of the pod's containers on this machine (pid: /proc status), found by the
    pod's cgroup, which the kubelet names after the pod's UID."""
    marks = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            if any(mark in cgroups for mark in marks):
                found[int(entry.name)] = (entry / "status").read_text()
        except OSError:
            continue
    return found


def _token_claims(node: LocalNode, pod: Any) -> dict[str, Any]:
    """The claims of the ServiceAccount token the kubelet projected into the pod (its
    payload only; the token itself is neither kept nor printed)."""
    (volume,) = [v.name for v in pod.spec.volumes if v.name.startswith("kube-api-access-")]
    token = volume_path(node, pod.metadata.uid, volume, kind="projected") / "token"
    payload = token.read_text().split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_the_deployment_runs_the_image_on_the_node_as_the_chart_service_account(
    crds: Kube, node: LocalNode, in_cluster_operator: Release, operator_image: OperatorImage
) -> None:
    release = in_cluster_operator
    pod = release.pod
    assert pod.spec.node_name == node.name
    assert pod.spec.service_account_name == release.service_account
    (owner,) = pod.metadata.owner_references
    apps: Any = kubernetes.client.AppsV1Api(crds.api)
    replica_set = apps.read_namespaced_replica_set(owner.name, release.namespace)
    assert [o.name for o in replica_set.metadata.owner_references] == [release.deployment]
    (container,) = pod.status.container_statuses
    assert container.ready and container.image == operator_image.reference
    # Nothing but the projected token to log in with (no kubeconfig): kopf's in-cluster login.
    (spec,) = pod.spec.containers
    assert not [e for e in spec.env or [] if e.name == "KUBECONFIG"]
    claims = _token_claims(node, pod)
    assert claims["sub"] == f"system:serviceaccount:{release.namespace}:{release.service_account}"
    assert claims["kubernetes.io"]["pod"]["name"] == pod.metadata.name

    processes = _pod_processes(pod.metadata.uid)
    operator = {
        pid: status
        for pid, status in processes.items()
        if "signet" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    }
    assert operator, f"no signet process in the pod's cgroup: {sorted(processes)}"
    for pid, status in operator.items():
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(UID)}, f"pid {pid} runs as {uids}"


# (b) and (c): the identities it issues ---------------------------------------------------


@dataclass(frozen=True)
class Mesh:
    namespace: str
    server_port: int
    backend_status: int
    frontend_status: int


@pytest.fixture(scope="module")
def mesh(
    crds: Kube, node: LocalNode, in_cluster_operator: Release, kms_emulator: EmulatorServer
) -> Iterator[Mesh]:
    """examples/mtls-spiffe's identities, issued by the pod, and its two roles as pods."""
    kms_emulator.ensure_key("demo", "ca", "EC_SIGN_P256_SHA256")
    mesh = Mesh(f"mesh-{uuid.uuid4().hex[:8]}", free_port(), free_port(), free_port())
    crds.apply({"apiVersion": "v1", "kind": "List", "items": example_objects(mesh.namespace)})
    try:
        for name in ("frontend", "backend"):
            try:
                wait_condition(crds, mesh.namespace, name, timeout=60)
            except AssertionError as error:
                log = crds.core.read_namespaced_pod_log(
                    in_cluster_operator.pod.metadata.name, in_cluster_operator.namespace
                )
                raise AssertionError(f"{error}\noperator pod log:\n{log[-3000:]}") from None
        server = f"127.0.0.1:{mesh.server_port}"
        frontend, backend = (spiffe_id(mesh.namespace, role) for role in ("frontend", "backend"))
        for manifest in (
            mtls_server_pod(
                mesh.namespace, listen=server, allow=frontend, status_port=mesh.backend_status
            ),
            mtls_client_pod(
                mesh.namespace, connect=server, expect=backend, status_port=mesh.frontend_status
            ),
        ):
            run_pod(crds, node, manifest)
        yield mesh
    finally:
        crds.kubectl("delete", "namespace", mesh.namespace, "--wait=false")


def test_pods_authenticate_each_other_with_what_the_pod_issued(mesh: Mesh) -> None:
    frontend, backend = (spiffe_id(mesh.namespace, role) for role in ("frontend", "backend"))
    client = wait_status(
        mesh.frontend_status, "frontend handshakes", lambda r: r["ok"] >= 3, failure=AssertionError
    )
    assert client["peers"] == {backend: client["ok"]}
    assert client["failed"] == 0, client["lastError"]
    server = wait_status(
        mesh.backend_status,
        "backend handshakes",
        lambda r: r["peers"].get(frontend, 0) >= 3,
        failure=AssertionError,
    )
    assert set(server["peers"]) == {frontend}


def test_every_certificate_in_use_was_signed_by_the_operator_pod(
    crds: Kube, in_cluster_operator: Release, mesh: Mesh
) -> None:
    release = in_cluster_operator
    log = crds.core.read_namespaced_pod_log(release.pod.metadata.name, release.namespace)
    trail = list(from_log(lines_of(log.splitlines(), "operator pod log")))
    checked = verify(trail)
    assert checked.problem is None, checked.problem
    assert checked.first_seq == 1, "the pod's audit chain starts in this log"
    signed = {
        (r["certificate"]["namespace"], r["certificate"]["name"], r["serialNumber"])
        for r in map(parse_record, (line.text for line in trail))
        if r is not None and r["kind"] == SIGNATURE and r.get("purpose") == "certificate"
    }
    for name in ("frontend", "backend"):
        pem = secret_data(crds, mesh.namespace, f"{name}-svid")["tls.crt"]
        serial = format(x509.load_pem_x509_certificate(pem).serial_number, "x")
        assert (mesh.namespace, name, serial) in signed, (
            f"{name}'s certificate {serial} is not among the pod's signatures"
        )
    assert "PRIVATE KEY" not in log

"""Pods on the real node mount Signet's SPIFFE identities and talk mutual TLS with them.

The identities are examples/mtls-spiffe's (moved to fresh namespaces); the pods run the
workload built from tools/workload, which reads the mounted files for every handshake and
counts what happened. Three claims: (a) the two example identities authenticate each other
and an identity from another namespace is refused by the SPIFFE check, although its chain
is valid; (b) the CA they verify with is the trust ConfigMap mounted as a volume; (c) a
renewal reaches the running pods through the kubelet's volume refresh, with no restart and
no failed handshake.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.kms.emulator import EmulatorServer
from signet_dev.controlplane import free_port
from signet_dev.node import LocalNode
from tests.kube import Kube, eventually
from tests.node.pods import (
    delete_pod,
    example_objects,
    mtls_pod,
    run_pod,
    spiffe_id,
    status,
    volume_files,
)
from tests.operator.harness import OperatorProcess, secret_data, wait_condition

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@dataclass
class Mesh:
    namespace: str
    other: str  # the intruder's namespace
    mtls_port: int
    backend_status: int
    frontend_status: int
    intruder_status: int

    @property
    def frontend(self) -> str:
        return spiffe_id(self.namespace, "frontend")

    @property
    def backend(self) -> str:
        return spiffe_id(self.namespace, "backend")

    @property
    def intruder(self) -> str:
        return spiffe_id(self.other, "frontend")


def _serial(pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


@pytest.fixture(scope="module")
def mesh(
    crds: Kube, node: LocalNode, signet_operator: OperatorProcess, kms_emulator: EmulatorServer
) -> Iterator[Mesh]:
    """examples/mtls-spiffe in two namespaces, a backend and a frontend pod in the first and
    an intruder (the second namespace's frontend) calling the same backend."""
    kms_emulator.ensure_key("demo", "ca", "EC_SIGN_P256_SHA256")
    suffix = uuid.uuid4().hex[:8]
    mesh = Mesh(f"mesh-{suffix}", f"other-{suffix}", *(free_port() for _ in range(4)))
    for namespace in (mesh.namespace, mesh.other):
        crds.apply({"apiVersion": "v1", "kind": "List", "items": example_objects(namespace)})
        for name in ("frontend", "backend"):
            wait_condition(crds, namespace, name, timeout=60)
    server = f"127.0.0.1:{mesh.mtls_port}"
    run_pod(
        crds,
        node,
        mtls_pod(
            "backend", mesh.namespace, "server",
            [f"--listen={server}", f"--allow={mesh.frontend}",
             f"--status=127.0.0.1:{mesh.backend_status}"],
            secret="backend-svid", service_account="backend",
        ),
    )  # fmt: skip
    for namespace, port in (
        (mesh.namespace, mesh.frontend_status),
        (mesh.other, mesh.intruder_status),
    ):
        run_pod(
            crds,
            node,
            mtls_pod(
                "frontend" if namespace == mesh.namespace else "intruder", namespace, "client",
                [f"--connect={server}", f"--expect={mesh.backend}", "--interval=100ms",
                 f"--status=127.0.0.1:{port}"],
                secret="frontend-svid", service_account="frontend",
            ),
        )  # fmt: skip
    yield mesh
    for namespace in (mesh.namespace, mesh.other):
        crds.kubectl("delete", "namespace", namespace, "--wait=false")


def _reached(port: int, what: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        report = status(port)
        return report if check(report) else None

    result: dict[str, Any] = eventually(
        ready, timeout=timeout, interval=0.2, what=what, errors=(AssertionError, OSError)
    )
    return result


def test_pods_authenticate_each_other_and_refuse_another_namespace(crds: Kube, mesh: Mesh) -> None:
    frontend = _reached(mesh.frontend_status, "frontend handshakes", lambda r: r["ok"] >= 3)
    assert frontend["peers"] == {mesh.backend: frontend["ok"]}
    backend = _reached(
        mesh.backend_status,
        "backend accepted the frontend and refused the intruder",
        lambda r: r["peers"].get(mesh.frontend, 0) >= 3 and r["refused"].get(mesh.intruder),
    )
    assert set(backend["peers"]) == {mesh.frontend}
    assert set(backend["refused"]) == {mesh.intruder}
    intruder = _reached(mesh.intruder_status, "intruder refused", lambda r: r["failed"] >= 1)
    assert intruder["ok"] == 0, intruder
    assert intruder["peers"] == {}
    # The intruder's chain verified (same KMS key, same CA name): the SPIFFE check refused.
    assert "not an allowed caller" in backend["lastError"], backend["lastError"]

    # What the pods logged is what `kubectl logs` shows, through the kubelet.
    log = crds.core.read_namespaced_pod_log("frontend", mesh.namespace)
    assert f"handshake ok peer={mesh.backend}" in log
    log = crds.core.read_namespaced_pod_log("backend", mesh.namespace)
    assert f'handshake failed peer="{mesh.intruder}"' in log


def test_trust_comes_from_the_mounted_configmap(crds: Kube, node: LocalNode, mesh: Mesh) -> None:
    bundle = crds.core.read_namespaced_config_map("signet-issuer-mesh-ca", mesh.namespace)
    der = x509.load_pem_x509_certificate(bundle.data["ca.crt"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    expected = hashlib.sha256(der).hexdigest()
    for port in (mesh.frontend_status, mesh.backend_status):
        report = _reached(port, "a handshake", lambda r: r["ok"] >= 1)
        assert report["trustSHA256"] == expected
    # The identity volume holds only the key pair: no other CA was within reach.
    for name in ("frontend", "backend"):
        pod = crds.core.read_namespaced_pod(name, mesh.namespace)
        assert volume_files(node, pod.metadata.uid, "identity") == {"tls.crt", "tls.key"}


def test_renewal_reaches_running_pods_without_a_failed_handshake(crds: Kube, mesh: Mesh) -> None:
    delete_pod(crds, mesh.other, "intruder")

    def intruder_stopped() -> bool:
        # The API object goes before the process does: wait for the process itself.
        try:
            status(mesh.intruder_status)
        except OSError:
            return True
        return False

    eventually(intruder_stopped, timeout=60, what="the intruder's process to exit")
    before = {
        name: crds.core.read_namespaced_pod(name, mesh.namespace).status.container_statuses[0]
        for name in ("frontend", "backend")
    }
    server_failed = status(mesh.backend_status)["failed"]
    client = status(mesh.frontend_status)
    assert client["failed"] == 0, client
    serials = {name: len(status(port)["ownSerials"]) for name, port in
               (("frontend", mesh.frontend_status), ("backend", mesh.backend_status))}  # fmt: skip

    # One-minute certificates renewed after ten seconds: several renewals in a short test.
    for name in ("frontend", "backend"):
        crds.kubectl(
            "patch", "certificate", name, "-n", mesh.namespace, "--type=merge",
            "-p", '{"spec": {"duration": "1m", "renewBefore": "50s"}}',
        )  # fmt: skip

    # Each pod presents at least two certificates it did not start with, and the latest is
    # the one in the Secret now.
    for name, port in (("frontend", mesh.frontend_status), ("backend", mesh.backend_status)):
        _reached(
            port,
            f"{name} presenting two renewed certificates",
            lambda r, n=name: len(r["ownSerials"]) >= serials[n] + 2,
            timeout=120,
        )

        def current(name: str = name, port: int = port) -> bool:
            secret = secret_data(crds, mesh.namespace, f"{name}-svid")
            return bool(status(port)["ownSerials"][-1] == _serial(secret["tls.crt"]))

        eventually(current, timeout=60, what=f"{name} uses the Secret's current certificate")

    client = status(mesh.frontend_status)
    server = status(mesh.backend_status)
    assert client["failed"] == 0, f"{client['failed']} of {client['ok']} handshakes failed"
    assert server["failed"] == server_failed, server["lastError"]
    assert len(client["peerSerials"]) >= 3  # the client saw the server's renewals too
    for name, was in before.items():
        now = crds.core.read_namespaced_pod(name, mesh.namespace).status.container_statuses[0]
        assert now.restart_count == was.restart_count == 0
        assert now.state.running.started_at == was.state.running.started_at

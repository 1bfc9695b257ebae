"""Pods on the real node get their identities from the kubelet, signed by Signet: no
Certificate, no Secret.

examples/pod-certificates moved to a fresh namespace: its Issuer opts in to pod
certificates, and the two pods are its Deployments' templates (ServiceAccount, security
context, the projected volume with a ``podCertificate`` and a ``clusterTrustBundle``
source) running the workload instead of the example's python app, at the same paths. The
kubelet makes each key, creates the PodCertificateRequest as the node, holds the pod in
ContainerCreating until Signet has answered, and writes the credential bundle and the
issuer's ClusterTrustBundle into the volume. Claims: the pods authenticate each other by
SPIFFE ID; what is mounted is a key and a chain that verifies against the mounted bundle,
naming the pod's ServiceAccount; and each pod cost exactly one request, made by the
kubelet and signed once.

Refresh is not tested here: the apiserver puts ``beginRefreshAt`` at least ten minutes
after ``notBefore``, and the kubelet adds up to five minutes of jitter and checks only once
every one to two minutes (test_workload_bundle.py shows the workload picking up a swapped
bundle).
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from signet.controller.trustbundles import bundle_name
from signet.kms.emulator import EmulatorServer
from signet_dev.controlplane import free_port
from signet_dev.node import LocalNode, pod_manifest
from tests.kube import Kube, eventually, wait_event
from tests.node.pods import (
    POD_CERTIFICATES,
    example_objects,
    example_workload_pod,
    run_pod,
    spiffe_id,
    status,
    volume_path,
)
from tests.operator.harness import OperatorProcess, wait_issuer_ready

pytestmark = [pytest.mark.cluster, pytest.mark.node]

ROLES = ("backend", "frontend")
IDENTITY = "identity"  # the examples' projected volume
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass
class PodMesh:
    namespace: str
    issuer: dict[str, Any]
    status_ports: dict[str, int]

    @property
    def signer(self) -> str:
        return f"issuers.signet.dev/{self.namespace}.mesh"


@pytest.fixture(scope="module")
def pod_mesh(
    crds: Kube, node: LocalNode, signet_operator: OperatorProcess, kms_emulator: EmulatorServer
) -> Iterator[PodMesh]:
    """The example's Issuer and ServiceAccounts in a fresh namespace, and its backend and
    frontend pods running (which needs their pod certificates issued)."""
    kms_emulator.ensure_key("demo", "ca", "EC_SIGN_P256_SHA256")
    namespace = f"podcert-{uuid.uuid4().hex[:8]}"
    crds.apply(
        {"apiVersion": "v1", "kind": "List", "items": example_objects(namespace, POD_CERTIFICATES)}
    )
    issuer = wait_issuer_ready(crds, namespace, "mesh", timeout=60)
    mesh = PodMesh(namespace, issuer, {role: free_port() for role in ROLES})
    server = f"127.0.0.1:{free_port()}"
    pods = {
        "backend": [
            f"--listen={server}",
            f"--allow={spiffe_id(namespace, 'frontend')}",
        ],
        "frontend": [
            f"--connect={server}",
            f"--expect={spiffe_id(namespace, 'backend')}",
            "--interval=100ms",
        ],
    }
    for role, args in pods.items():
        manifest = example_workload_pod(
            POD_CERTIFICATES,
            role,
            namespace,
            [*args, f"--status=127.0.0.1:{mesh.status_ports[role]}"],
        )
        run_pod(crds, node, manifest, timeout=120)
    yield mesh
    crds.kubectl("delete", "namespace", namespace, "--wait=false")


def _reached(port: int, what: str, check: Any) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        report = status(port)
        return report if check(report) else None

    result: dict[str, Any] = eventually(
        ready, timeout=60, interval=0.2, what=what, errors=(AssertionError, OSError)
    )
    return result


def _mounted(crds: Kube, node: LocalNode, mesh: PodMesh, role: str) -> tuple[Path, str]:
    """The pod's projected volume folder (as the container sees it) and the pod's UID."""
    pod = crds.core.read_namespaced_pod(role, mesh.namespace)
    return volume_path(node, pod.metadata.uid, IDENTITY, kind="projected"), pod.metadata.uid


def test_pods_authenticate_each_other_with_kubelet_made_identities(
    crds: Kube, mesh_ready: PodMesh
) -> None:
    mesh = mesh_ready
    backend_id = spiffe_id(mesh.namespace, "backend")
    frontend_id = spiffe_id(mesh.namespace, "frontend")
    frontend = _reached(
        mesh.status_ports["frontend"], "frontend handshakes", lambda r: r["ok"] >= 3
    )
    assert frontend["peers"] == {backend_id: frontend["ok"]}
    backend = _reached(
        mesh.status_ports["backend"],
        "backend accepted the frontend",
        lambda r: r["peers"].get(frontend_id, 0) >= 3,
    )
    assert set(backend["peers"]) == {frontend_id}
    assert frontend["failed"] == backend["failed"] == 0, (frontend, backend)
    # Both verified with the issuer's CA, which is what the ClusterTrustBundle carries.
    ca = x509.load_pem_x509_certificate(mesh.issuer["status"]["caCertificate"].encode())
    expected = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert frontend["trustSHA256"] == backend["trustSHA256"] == expected
    log = crds.core.read_namespaced_pod_log("frontend", mesh.namespace)
    assert f"handshake ok peer={backend_id}" in log


def test_the_mounted_bundle_is_the_pods_identity_and_chains_to_the_mounted_trust(
    crds: Kube, node: LocalNode, mesh_ready: PodMesh, tmp_path: Path
) -> None:
    mesh = mesh_ready
    ctb = crds.custom.get_cluster_custom_object(
        "certificates.k8s.io",
        "v1",
        "clustertrustbundles",
        bundle_name(("Issuer", mesh.namespace, "mesh")),
    )
    for role in ROLES:
        folder, _ = _mounted(crds, node, mesh, role)
        assert {p.name for p in folder.iterdir() if not p.name.startswith("..")} == {
            "credentials.pem",
            "ca.crt",
        }
        trust = (folder / "ca.crt").read_text()
        assert trust == ctb["spec"]["trustBundle"] == mesh.issuer["status"]["caCertificate"]

        bundle = (folder / "credentials.pem").read_bytes()
        # Key first, then the chain: the layout the kubelet documents and --bundle reads.
        blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----", bundle)
        assert blocks[0] == b"PRIVATE KEY" and set(blocks[1:]) == {b"CERTIFICATE"}, blocks
        key = serialization.load_pem_private_key(bundle, password=None)
        chain = x509.load_pem_x509_certificates(bundle)
        leaf = chain[0]
        assert leaf.public_key().public_bytes(PEM, SPKI) == key.public_key().public_bytes(PEM, SPKI)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            spiffe_id(mesh.namespace, role)
        ]
        ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        # The chain verifies against the mounted bundle (the key stays where it is).
        (tmp_path / "chain.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in chain))
        for purpose in ("sslclient", "sslserver"):
            result = subprocess.run(
                ["openssl", "verify", "-x509_strict", "-purpose", purpose,
                 "-CAfile", str(folder / "ca.crt"), "-untrusted", str(tmp_path / "chain.pem"),
                 str(tmp_path / "chain.pem")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
        # The pod presents exactly this certificate.
        report = status(mesh.status_ports[role])
        assert report["ownSerials"] == [format(leaf.serial_number, "x")]
        # The kubelet hands the key to the example's runAsUser and fsGroup, and nobody else.
        info = (folder / "credentials.pem").stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (0o640, 65532, 65532)


def test_each_pod_cost_one_request_made_by_the_kubelet_and_signed_once(
    crds: Kube, node: LocalNode, mesh_ready: PodMesh, signet_operator: OperatorProcess
) -> None:
    mesh = mesh_ready
    requests = crds.custom.list_namespaced_custom_object(
        "certificates.k8s.io", "v1", mesh.namespace, "podcertificaterequests"
    )["items"]
    by_pod = {r["spec"]["podUID"]: r for r in requests}
    assert len(requests) == len(by_pod) == len(ROLES), [r["metadata"]["name"] for r in requests]
    for role in ROLES:
        folder, uid = _mounted(crds, node, mesh, role)
        request = by_pod[uid]
        spec = request["spec"]
        assert (spec["signerName"], spec["podName"], spec["serviceAccountName"]) == (
            mesh.signer, role, role
        )  # fmt: skip
        assert spec["nodeName"] == node.name
        assert {f["manager"] for f in request["metadata"]["managedFields"]} >= {"kubelet"}
        conditions = request["status"]["conditions"]
        assert [(c["type"], c["status"]) for c in conditions] == [("Issued", "True")]
        issued = x509.load_pem_x509_certificates(request["status"]["certificateChain"].encode())
        mounted = x509.load_pem_x509_certificates((folder / "credentials.pem").read_bytes())
        assert issued == mounted
        name = request["metadata"]["name"]
        records = [
            r
            for r in signet_operator.audit_all()
            if r.get("kind") == "signet.dev/signature"
            and (r.get("podCertificateRequest") or {}).get("name") == name
        ]
        assert len(records) == 1, records
        assert records[0]["serialNumber"] == format(issued[0].serial_number, "x")
        assert records[0]["node"]["name"] == node.name


def test_a_pod_whose_issuer_did_not_opt_in_never_starts(
    crds: Kube, node: LocalNode, mesh_ready: PodMesh
) -> None:
    mesh = mesh_ready
    issuer = copy.deepcopy(
        next(o for o in example_objects(mesh.namespace, POD_CERTIFICATES) if o["kind"] == "Issuer")
    )
    issuer["metadata"]["name"] = "plain"
    del issuer["spec"]["podCertificates"]
    crds.apply(issuer)
    wait_issuer_ready(crds, mesh.namespace, "plain", timeout=60)
    bundle = "/var/run/signet/identity/credentials.pem"
    manifest = pod_manifest(
        "unsigned",
        mesh.namespace,
        ["client", f"--bundle={bundle}", f"--trust={bundle}", "--connect=127.0.0.1:1"],
        service_account="frontend",
        volumes=[
            {
                "name": IDENTITY,
                "projected": {
                    "sources": [
                        {
                            "podCertificate": {
                                "signerName": f"issuers.signet.dev/{mesh.namespace}.plain",
                                "keyType": "ECDSAP256",
                                "credentialBundlePath": "credentials.pem",
                            }
                        }
                    ]
                },
            }
        ],
        mounts=[{"name": IDENTITY, "mountPath": "/var/run/signet/identity", "readOnly": True}],
    )
    crds.apply(manifest)
    # The kubelet reports Signet's refusal on the pod, and keeps the container from starting.
    event = wait_event(crds, mesh.namespace, "unsigned", "Denied", type="Warning", timeout=60)
    assert "PodCertificatesNotEnabled" in event.message, event.message
    pod = crds.core.read_namespaced_pod("unsigned", mesh.namespace)
    assert pod.status.phase == "Pending"
    (container,) = pod.status.container_statuses
    assert container.state.waiting.reason == "ContainerCreating", container.state
    requests = crds.custom.list_namespaced_custom_object(
        "certificates.k8s.io", "v1", mesh.namespace, "podcertificaterequests"
    )["items"]
    (request,) = [r for r in requests if r["spec"]["podUID"] == pod.metadata.uid]
    assert [c["type"] for c in request["status"]["conditions"]] == ["Denied"]
    assert "certificateChain" not in request["status"]


@pytest.fixture
def mesh_ready(pod_mesh: PodMesh) -> PodMesh:
    """The module's pods, once each has completed a handshake (so the reports and files
    the tests read are those of running pods)."""
    for role in ROLES:
        _reached(pod_mesh.status_ports[role], f"{role} handshake", lambda r: r["ok"] >= 1)
    return pod_mesh

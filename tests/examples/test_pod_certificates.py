"""examples/pod-certificates: the Deployments' podCertificate and clusterTrustBundle sources
name what the Issuer answers and publishes, and the example's own app.py completes mutual
TLS with the credential bundles the kubelet would write.

No kubelet here (tests/node/test_pod_certificate_pods.py runs the example's volumes on the
real node): the requests are made as the kubelet makes them, for pods created from the
Deployments' own templates and bound to a Node object that nothing serves, and each bundle
is assembled the way the kubelet assembles it (its key, then the issued chain).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from signet.controller.trustbundles import bundle_name
from signet_dev.controlplane import free_port
from tests.examples.conftest import EXAMPLES
from tests.kube import Kube, eventually
from tests.operator.harness import wait_issuer_ready
from tests.podcerts.requests import (
    answer,
    create_node,
    create_request,
    generate_key,
    wait_answered,
)

pytestmark = pytest.mark.cluster

EXAMPLE = EXAMPLES / "pod-certificates"
APP = EXAMPLE / "app.py"
NS = "pod-certificates"
SIGNER = f"issuers.signet.dev/{NS}.mesh"
FRONTEND = f"spiffe://cluster.local/ns/{NS}/sa/frontend"
BACKEND = f"spiffe://cluster.local/ns/{NS}/sa/backend"


def _deployment(crds: Kube, name: str) -> dict[str, Any]:
    """The Deployment as the apiserver stored it (after kustomize and defaulting)."""
    result: dict[str, Any] = json.loads(
        crds.kubectl("get", "deployment", name, "-n", NS, "-o", "json").stdout
    )
    return result


def _sources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The identity volume's projected sources by kind, and where they are mounted."""
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "identity"]
    (container,) = template["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "identity"]
    sources = {kind: s[kind] for s in volume["projected"]["sources"] for kind in s}
    return {**sources, "mount": mount}


def _flag(command: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    return value


@pytest.fixture
def fake_node(crds: Kube) -> Iterator[dict[str, Any]]:
    """A Node object no kubelet serves, and the pods bound to it removed at once after the
    test (a graceful delete would wait for a kubelet that never answers)."""
    node = create_node(crds)
    yield node
    for pod in crds.core.list_namespaced_pod(NS).items:
        if pod.spec.node_name == node["metadata"]["name"]:
            crds.core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
    crds.core.delete_node(node["metadata"]["name"])


def _bundle_for(crds: Kube, node: dict[str, Any], deployment: dict[str, Any], folder: Path) -> Path:
    """Create a pod from the Deployment's template on ``node`` and do what the kubelet does
    for its podCertificate source: make the key, ask, and write key + chain to one file."""
    template = deployment["spec"]["template"]
    source = _sources(template)["podCertificate"]
    name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": template["metadata"]["labels"]},
            "spec": {**template["spec"], "nodeName": node["metadata"]["name"]},
        }
    )
    pod = crds.api.sanitize_for_serialization(crds.core.read_namespaced_pod(name, NS))
    key = generate_key(source["keyType"])
    request = create_request(crds, pod, node, source["signerName"], key)
    body = wait_answered(crds, NS, request)
    condition = answer(body)
    assert condition is not None and condition["type"] == "Issued", condition
    path = folder / f"{deployment['metadata']['name']}.pem"
    path.touch(mode=0o600)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(key_pem + body["status"]["certificateChain"].encode())
    return path


def _client(
    credentials: Path, trust: Path, port: int, expect: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, str(APP), "client", f"--credentials={credentials}", f"--trust={trust}",
            f"--connect=127.0.0.1:{port}", f"--expect={expect}", "--once",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_deployments_mount_what_the_issuer_signs_and_publishes(
    crds: Kube,
    apply_example: Callable[[str], str],
    fake_node: dict[str, Any],
    tmp_path: Path,
) -> None:
    apply_example("pod-certificates")
    issuer = wait_issuer_ready(crds, NS, "mesh")
    allowed_key_types = issuer["spec"]["podCertificates"]["allowedKeyTypes"]
    ctb_name = bundle_name(("Issuer", NS, "mesh"))
    ctb = eventually(
        lambda: crds.custom.get_cluster_custom_object(
            "certificates.k8s.io", "v1", "clustertrustbundles", ctb_name
        ),
        what=f"ClusterTrustBundle {ctb_name}",
    )
    assert ctb["spec"] == {"signerName": SIGNER, "trustBundle": issuer["status"]["caCertificate"]}

    deployments = {name: _deployment(crds, name) for name in ("frontend", "backend")}
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        assert template["spec"]["serviceAccountName"] == name
        sources = _sources(template)
        assert sources["podCertificate"]["signerName"] == SIGNER
        assert sources["podCertificate"]["keyType"] in allowed_key_types
        trust = sources["clusterTrustBundle"]
        assert trust["signerName"] == SIGNER
        # The selector picks Signet's bundle for this issuer.
        assert trust["labelSelector"]["matchLabels"].items() <= ctb["metadata"]["labels"].items()
        # The app reads the files the volume writes.
        command = template["spec"]["containers"][0]["command"]
        folder = sources["mount"]["mountPath"]
        credentials = sources["podCertificate"]["credentialBundlePath"]
        assert _flag(command, "credentials") == f"{folder}/{credentials}"
        assert _flag(command, "trust") == f"{folder}/{trust['path']}"
    backend_command = deployments["backend"]["spec"]["template"]["spec"]["containers"][0]["command"]
    frontend_command = deployments["frontend"]["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert _flag(backend_command, "allow") == FRONTEND
    assert _flag(frontend_command, "expect") == BACKEND

    bundles = {
        name: _bundle_for(crds, fake_node, deployment, tmp_path)
        for name, deployment in deployments.items()
    }
    trust_file = tmp_path / "ca.crt"
    trust_file.write_text(ctb["spec"]["trustBundle"])
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, str(APP), "server", f"--credentials={bundles['backend']}",
            f"--trust={trust_file}", "--host=127.0.0.1", f"--port={port}",
            f"--allow={_flag(backend_command, 'allow')}", "--max-connections=2",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("listening on 127.0.0.1:")
        ok = _client(bundles["frontend"], trust_file, port, _flag(frontend_command, "expect"))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.strip() == f"server {BACKEND} says: hello {FRONTEND}"
        # The backend's certificate chains to the same CA but is not an allowed caller.
        refused = _client(bundles["backend"], trust_file, port, BACKEND)
        assert refused.returncode == 1
        server_log, _ = server.communicate(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert server_log.splitlines()[:2] == [f"accepted {FRONTEND}", f"refused {BACKEND}"]

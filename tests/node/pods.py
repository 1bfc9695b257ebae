"""Running the workload on the node and reading what it saw.

Every wait here is for a state (pod Running, a count reached), never a fixed time: the
kubelet's pace on a busy two-core machine varies by seconds.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from signet_dev.node import LocalNode, pod_manifest
from tests.kube import ROOT, Kube, eventually

EXAMPLE = ROOT / "examples" / "mtls-spiffe"
IDENTITY_DIR = "/var/run/signet/identity"
TRUST_DIR = "/var/run/signet/trust"


def example_objects(namespace: str, example: Path = EXAMPLE) -> list[dict[str, Any]]:
    """An example's Namespace, ServiceAccounts, Issuer and Certificates moved to
    ``namespace`` (SPIFFE IDs and DNS names follow), without its Deployments and Services:
    those name public images; the node tests run the same roles with the local workload."""
    objects = []
    for path in sorted(example.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") in (None, "Kustomization", "Deployment", "Service"):
                continue
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = namespace
            else:
                doc["metadata"]["namespace"] = namespace
            x509_spec = doc.get("spec", {}).get("x509", {})
            if "dnsNames" in x509_spec:  # the default policy keeps DNS names in-namespace
                x509_spec["dnsNames"] = [
                    n.replace(f".{example.name}.svc", f".{namespace}.svc")
                    for n in x509_spec["dnsNames"]
                ]
            objects.append(doc)
    return sorted(objects, key=lambda doc: doc["kind"] != "Namespace")  # Namespace first


def spiffe_id(namespace: str, account: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{account}"


def mtls_pod(
    name: str,
    namespace: str,
    role: str,
    args: list[str],
    *,
    secret: str,
    service_account: str,
    bundle: str = "signet-issuer-mesh-ca",
) -> dict[str, Any]:
    """A workload pod as an app team would write it: the identity Secret and the trust
    ConfigMap as directory volumes (so renewals reach it). Only tls.crt and tls.key are
    projected from the Secret, so the CA the pod verifies with can only be the ConfigMap's."""
    return pod_manifest(
        name,
        namespace,
        [role, f"--identity={IDENTITY_DIR}", f"--trust={TRUST_DIR}/ca.crt", *args],
        service_account=service_account,
        volumes=[
            {
                "name": "identity",
                "secret": {
                    "secretName": secret,
                    "defaultMode": 0o440,
                    "items": [
                        {"key": "tls.crt", "path": "tls.crt"},
                        {"key": "tls.key", "path": "tls.key"},
                    ],
                },
            },
            {"name": "trust", "configMap": {"name": bundle}},
        ],
        mounts=[
            {"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True},
            {"name": "trust", "mountPath": TRUST_DIR, "readOnly": True},
        ],
    )


def run_pod(kube: Kube, node: LocalNode, manifest: dict[str, Any], timeout: float = 90) -> Any:
    """Apply the pod and wait until its container runs; a timeout shows the pod's status
    and the kubelet's last words, which is where a node problem explains itself."""
    kube.apply(manifest)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]

    def running() -> Any:
        pod = kube.core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if pod.status.phase == "Running" and statuses and statuses[0].state.running:
            return pod
        return None

    try:
        return eventually(running, timeout=timeout, interval=0.2, what=f"pod {namespace}/{name}")
    except AssertionError as error:
        pod = kube.core.read_namespaced_pod(name, namespace)
        kubelet_log = (node.workdir / "kubelet.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{error}\nstatus: {pod.status}\nkubelet:\n{kubelet_log}") from None


def delete_pod(kube: Kube, namespace: str, name: str) -> None:
    """Delete and wait until it is gone, so later counts cannot include it."""
    kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def gone() -> bool:
        try:
            kube.core.read_namespaced_pod(name, namespace)
        except kubernetes.client.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=60, what=f"pod {namespace}/{name} deleted")


def status(port: int) -> dict[str, Any]:
    """The workload's own report (host networking: its endpoint is on this machine)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def volume_path(node: LocalNode, pod_uid: str, volume: str, kind: str = "secret") -> Path:
    """Where the kubelet keeps a pod's Secret or ConfigMap volume: the very files the
    container has mounted (the kubelet's folder is shared with the host namespace)."""
    return node.kubelet_root / "pods" / pod_uid / "volumes" / f"kubernetes.io~{kind}" / volume


def volume_files(node: LocalNode, pod_uid: str, volume: str) -> set[str]:
    """The files the kubelet put in a Secret volume, as the container sees them."""
    folder = volume_path(node, pod_uid, volume)
    return {p.name for p in folder.iterdir() if not p.name.startswith("..")}

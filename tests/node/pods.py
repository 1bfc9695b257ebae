"""Running the workload on the node and reading what it saw: ``signet_dev.pods`` (shared
with `make demo`) plus what only tests need.

Every wait here is for a state (pod Running, a count reached), never a fixed time: the
kubelet's pace on a busy two-core machine varies by seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import yaml

from signet_dev.node import LocalNode, pod_manifest
from signet_dev.pods import (
    EXAMPLES,
    IDENTITY_DIR,
    MTLS_SPIFFE,
    TRUST_DIR,
    example_objects,
    mtls_pod,
    run_pod,
    spiffe_id,
    status,
)
from tests.kube import Kube, eventually

__all__ = [
    "EXAMPLE",
    "IDENTITY_DIR",
    "POD_CERTIFICATES",
    "TRUST_DIR",
    "delete_pod",
    "example_deployment",
    "example_objects",
    "example_workload_pod",
    "mtls_client_pod",
    "mtls_pod",
    "mtls_server_pod",
    "run_pod",
    "spiffe_id",
    "status",
    "volume_files",
    "volume_path",
]

EXAMPLE = MTLS_SPIFFE
POD_CERTIFICATES = EXAMPLES / "pod-certificates"


def example_deployment(example: Path, name: str) -> dict[str, Any]:
    """One Deployment of an example, as written."""
    for path in sorted(example.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment" and doc["metadata"]["name"] == name:
                result: dict[str, Any] = doc
                return result
    raise LookupError(f"no Deployment {name} in {example}")


def _flag(command: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    return value


def example_workload_pod(
    example: Path, deployment: str, namespace: str, args: list[str]
) -> dict[str, Any]:
    """A pod-certificates example Deployment's pod as the node runs it: the template's
    ServiceAccount, pod security context, and the volumes the kubelet writes (signer names
    moved to ``namespace`` along with the Issuer), mounted where the template mounts them.
    The example's python app is replaced by the workload (the node pulls no image), reading
    the very paths the app is given: its ``--credentials`` bundle and ``--trust`` file."""
    template = example_deployment(example, deployment)["spec"]["template"]
    spec = template["spec"]
    (container,) = spec["containers"]
    command: list[str] = container["command"]
    role = next(a for a in command if a in ("server", "client"))
    volumes = [v for v in spec["volumes"] if "projected" in v]
    for volume in volumes:
        for source in volume["projected"]["sources"]:
            for projection in source.values():
                if "signerName" in projection:
                    projection["signerName"] = projection["signerName"].replace(
                        f"issuers.signet.dev/{example.name}.", f"issuers.signet.dev/{namespace}."
                    )
    names = {v["name"] for v in volumes}
    manifest = pod_manifest(
        deployment,
        namespace,
        [
            role,
            f"--bundle={_flag(command, 'credentials')}",
            f"--trust={_flag(command, 'trust')}",
            *args,
        ],
        service_account=spec["serviceAccountName"],
        volumes=volumes,
        mounts=[m for m in container["volumeMounts"] if m["name"] in names],
    )
    manifest["spec"]["securityContext"] = spec.get("securityContext", {})
    return manifest


def mtls_server_pod(
    namespace: str, *, listen: str, allow: str, status_port: int, name: str = "backend"
) -> dict[str, Any]:
    """examples/mtls-spiffe's backend: serves mutual TLS on ``listen`` as the ``backend``
    identity and accepts only the SPIFFE ID ``allow``; reports on ``status_port``."""
    return mtls_pod(
        name, namespace, "server",
        [f"--listen={listen}", f"--allow={allow}", f"--status=127.0.0.1:{status_port}"],
        secret="backend-svid", service_account="backend",
    )  # fmt: skip


def mtls_client_pod(
    namespace: str, *, connect: str, expect: str, status_port: int, name: str = "frontend"
) -> dict[str, Any]:
    """examples/mtls-spiffe's frontend: calls ``connect`` every 100 ms as the ``frontend``
    identity and accepts only the SPIFFE ID ``expect`` as the server; reports on
    ``status_port``."""
    return mtls_pod(
        name, namespace, "client",
        [f"--connect={connect}", f"--expect={expect}", "--interval=100ms",
         f"--status=127.0.0.1:{status_port}"],
        secret="frontend-svid", service_account="frontend",
    )  # fmt: skip


def delete_pod(kube: Kube, namespace: str, name: str) -> None:
    """Delete and wait until it is gone, so later counts cannot include it."""
    kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def gone() -> bool:
        try:
            kube.core.read_namespaced_pod(name, namespace)
        except kubernetes.client.ApiException as error:
            return bool(error.status == 404)
        return False

    eventually(gone, timeout=60, what=f"pod {namespace}/{name} deleted")


def volume_path(node: LocalNode, pod_uid: str, volume: str, kind: str = "secret") -> Path:
    """Where the kubelet keeps a pod's Secret, ConfigMap (``kind``: ``secret``,
    ``configmap``) or projected volume (``projected``): the very files the container has
    mounted (the kubelet's folder is shared with the host namespace)."""
    return node.kubelet_root / "pods" / pod_uid / "volumes" / f"kubernetes.io~{kind}" / volume


def volume_files(node: LocalNode, pod_uid: str, volume: str) -> set[str]:
    """The files the kubelet put in a Secret volume, as the container sees them."""
    folder = volume_path(node, pod_uid, volume)
    return {p.name for p in folder.iterdir() if not p.name.startswith("..")}

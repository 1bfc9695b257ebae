"""Workload pods on the local node (``signet_dev.node``): the mutual-TLS pair the node tests
and ``make demo`` run with Signet's identities, and how to read what they saw.

The pods run the workload built from tools/workload, which reads its mounted files for
every handshake and counts what happened on a JSON status endpoint; with host networking
that endpoint is on this machine. Every wait here is for a state (pod Running, a count
reached), never a fixed time: the kubelet's pace on a busy two-core machine varies by
seconds.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from signet_dev.kube import CHECKOUT, KubeClient
from signet_dev.node import (
    NODE_LOCK,
    LocalNode,
    node_lock_held,
    pod_manifest,
    unavailable_reason,
)

EXAMPLES = CHECKOUT / "examples"
MTLS_SPIFFE = EXAMPLES / "mtls-spiffe"
IDENTITY_DIR = "/var/run/signet/identity"
TRUST_DIR = "/var/run/signet/trust"


def node_unavailable() -> str | None:
    """Why a node cannot start here right now, or None: what ``unavailable_reason`` says,
    or that another session's node holds the machine-wide lock. ``LocalNode.start`` would
    queue behind that one for up to half an hour; the demo would rather go without."""
    reason = unavailable_reason()
    if reason:
        return reason
    if node_lock_held():
        return f"another session's node holds {NODE_LOCK} (one kubelet per machine)"
    return None


def example_objects(namespace: str, example: Path = MTLS_SPIFFE) -> list[dict[str, Any]]:
    """An example's Namespace, ServiceAccounts, Issuer and Certificates moved to
    ``namespace`` (SPIFFE IDs and DNS names follow), without its Deployments and Services:
    those name public images; the node runs the same roles with the local workload."""
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
    """The SPIFFE ID Signet gives ``account`` in the examples' trust domain."""
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


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    failure: type[Exception],
    interval: float = 0.2,
    errors: tuple[type[BaseException], ...] = (kubernetes.client.ApiException, OSError),
) -> Any:
    """Poll ``check`` until it returns something truthy; raise ``failure`` with the last
    value or error. ``errors`` count as "not yet" (a pod not created, a port not open)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except errors as error:
            last = error
        if time.monotonic() > deadline:
            raise failure(f"timed out after {timeout}s waiting for {what}: {last!r}")
        time.sleep(interval)


def run_pod(
    kube: KubeClient, node: LocalNode, manifest: dict[str, Any], timeout: float = 90
) -> Any:
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
        return wait_for(
            running, timeout=timeout, what=f"pod {namespace}/{name}", failure=kube.failure
        )
    except kube.failure as error:
        pod = kube.core.read_namespaced_pod(name, namespace)
        kubelet_log = (node.workdir / "kubelet.log").read_text(errors="replace")[-3000:]
        raise kube.failure(f"{error}\nstatus: {pod.status}\nkubelet:\n{kubelet_log}") from None


def status(port: int) -> dict[str, Any]:
    """The workload's own report (host networking: its endpoint is on this machine)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def wait_status(
    port: int,
    what: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 60,
    failure: type[Exception] = RuntimeError,
) -> dict[str, Any]:
    """The workload's report once ``check`` holds for it."""

    def ready() -> dict[str, Any] | None:
        report = status(port)
        return report if check(report) else None

    result: dict[str, Any] = wait_for(ready, timeout=timeout, what=what, failure=failure)
    return result

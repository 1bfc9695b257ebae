"""Run the real operator (`signet run`) as a child process against the test cluster, and
read what it did (conditions, Secrets, audit records).

The launcher itself is ``signet_dev.operator``, shared with the benchmarks and the demo.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import signet_dev.operator
from signet.api import GROUP, VERSION
from tests.kube import Kube, eventually


@dataclass
class OperatorProcess(signet_dev.operator.OperatorProcess):
    """The tests' operator: JSON log appended across restarts, an audit file to check, a
    short KMS deadline so that KMS faults show within a test's patience."""

    kms_deadline: float | None = 3

    def audit_all(self) -> list[dict[str, Any]]:
        """Every record of the audit file, in order."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def audit_records(self, kind: str = "signet.dev/signature") -> list[dict[str, Any]]:
        """Records of one kind; by default the signatures made for Certificates."""
        return [
            r
            for r in self.audit_all()
            if r.get("kind") == kind
            and (kind != "signet.dev/signature" or r.get("purpose") == "certificate")
        ]


def in_namespace(value: Any, namespace: str) -> Any:
    """``value`` (a spec, or any part of one) with every ``{ns}`` replaced by ``namespace``:
    test tables name the per-test namespace before it exists."""
    if isinstance(value, str):
        return value.replace("{ns}", namespace)
    if isinstance(value, list):
        return [in_namespace(v, namespace) for v in value]
    if isinstance(value, dict):
        return {k: in_namespace(v, namespace) for k, v in value.items()}
    return value


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def get_certificate(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificates", name
    )
    return obj


def wait_condition(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 30,
    where: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    """Wait for the Certificate's Ready condition to have ``status`` (and ``reason``)."""

    def check() -> dict[str, Any] | None:
        obj = get_certificate(kube, namespace, name)
        ready = condition(obj, "Ready")
        generation = obj["metadata"].get("generation")
        if (
            ready.get("status") == status
            and (reason is None or ready.get("reason") == reason)
            and ready.get("observedGeneration") == generation
            and where(obj)
        ):
            return obj
        return None

    result: dict[str, Any] = eventually(
        check,
        timeout=timeout,
        interval=0.1,
        what=f"{namespace}/{name} Ready={status} {reason or ''}",
    )
    return result


def secret_data(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    secret = kube.core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def issuer_manifest(
    name: str, key_version: str, *, namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer" if namespace else "ClusterIssuer",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {"kms": {"cloudKMS": {"keyVersion": key_version}}, **spec},
    }
    body["spec"].setdefault("x509", {"selfSigned": {"commonName": f"{name} CA"}})
    body["spec"].setdefault("ssh", {"enabled": True})
    return body


def certificate_manifest(name: str, namespace: str, issuer: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"issuerRef": {"name": issuer}, "secretName": f"{name}-identity", **spec},
    }
    if "x509" not in spec and "ssh" not in spec:
        body["spec"]["x509"] = {"dnsNames": [f"{name}.{namespace}.svc"]}
    return body


def wait_issuer_ready(
    kube: Kube, namespace: str | None, name: str, timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if namespace:
            obj = kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "issuers", name
            )
        else:
            obj = kube.custom.get_cluster_custom_object(GROUP, VERSION, "clusterissuers", name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    result: dict[str, Any] = eventually(check, timeout=timeout, what=f"issuer {name} Ready")
    return result


def signatures(counters: Any, issuer: dict[str, Any]) -> int:
    """AsymmetricSign calls the emulator served for this issuer's key version."""
    count: int = counters.count(
        "AsymmetricSign", name=issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    )
    return count

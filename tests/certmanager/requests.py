"""Playing cert-manager against the real apiserver: its Certificate, the CertificateRequest
its controller makes for it, and the approver's verdict, all through the API as cert-manager
writes them (the verdict through /status)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from tests.kube import Kube, eventually

GROUP, VERSION = "cert-manager.io", "v1"
FINAL = ("Issued", "Failed", "Denied")


def create_certificate(kube: Kube, namespace: str, name: str, issuer: str) -> dict[str, Any]:
    """A cert-manager Certificate naming a Signet Issuer: the owner of its requests."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "secretName": f"{name}-tls",
            "dnsNames": [f"{name}.{namespace}.svc"],
            "issuerRef": {"group": "signet.dev", "kind": "Issuer", "name": issuer},
        },
    }
    created: dict[str, Any] = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificates", body
    )
    return created


def create_request(
    kube: Kube,
    namespace: str,
    name: str,
    pem: bytes,
    *,
    issuer: str = "ca",
    kind: str = "Issuer",
    group: str = "signet.dev",
    owner: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A CertificateRequest as cert-manager's issuing controller makes one: the PKCS#10,
    the issuerRef, the owning Certificate (reference and annotation)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["annotations"] = {"cert-manager.io/certificate-name": owner["metadata"]["name"]}
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Certificate",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CertificateRequest",
        "metadata": metadata,
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "issuerRef": {"group": group, "kind": kind, "name": issuer},
            **spec,
        },
    }
    created: dict[str, Any] = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificaterequests", body
    )
    return created


def get_request(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificaterequests", name
    )
    return body


def verdict(kube: Kube, namespace: str, name: str, type_: str = "Approved") -> None:
    """The approver's condition (Approved or Denied), added through /status."""
    body = get_request(kube, namespace, name)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = list((body.get("status") or {}).get("conditions") or [])
    conditions.append(
        {
            "type": type_,
            "status": "True",
            "reason": "cert-manager.io",
            "message": f"{type_} by the test's approver",
            "lastTransitionTime": now,
        }
    )
    body["status"] = {**(body.get("status") or {}), "conditions": conditions}
    kube.custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "certificaterequests", name, body
    )


def condition(body: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def wait_ready(
    kube: Kube, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The request once its Ready condition has ``reason``."""

    def check() -> dict[str, Any] | None:
        body = get_request(kube, namespace, name)
        return body if condition(body).get("reason") == reason else None

    found: dict[str, Any] = eventually(
        check, timeout=timeout, what=f"CertificateRequest {namespace}/{name} Ready {reason}"
    )
    return found


def decoded(body: dict[str, Any], field: str) -> str:
    return base64.b64decode((body.get("status") or {}).get(field) or "").decode()

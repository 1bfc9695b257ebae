"""CertificateSigningRequests the way a workload or a person makes them.

The apiserver writes who asked (``spec.username``, ``spec.groups``) from the credentials
of the create call, so a test creates each request as its requester through kubectl's
impersonation: a ServiceAccount (``system:serviceaccount:<ns>:<name>`` with its groups) or
a plain user. The requesters belong to one extra group that may create requests (and
nothing else); approval is the test admin's, through the /approval subresource as
``kubectl certificate approve`` does it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.kube import Kube, eventually

GROUP = "certificates.k8s.io"
VERSION = "v1"
PLURAL = "certificatesigningrequests"
REQUESTERS = "signet-test:csr-requesters"
"""The group the test's requesters are put in: it may create CertificateSigningRequests."""
USAGES = ["digital signature", "key encipherment", "server auth", "client auth"]


def allow_requesters(kube: Kube) -> str:
    """Let the ``REQUESTERS`` group create requests; returns the ClusterRole's name (the
    binding has the same) for the caller to delete."""
    name = "signet-test-csr-requesters"
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": [PLURAL],
                    "verbs": ["create", "get"],
                }
            ],
        }
    )
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": REQUESTERS}
            ],
        }
    )

    def granted() -> bool:  # RBAC reaches the authorizer through an informer
        result = kube.kubectl(
            "auth", "can-i", "create", f"{PLURAL}.{GROUP}",
            "--as=signet-test:probe", f"--as-group={REQUESTERS}",
            check=False,
        )  # fmt: skip
        return result.stdout.strip() == "yes"

    eventually(granted, timeout=15, what=f"RBAC: {REQUESTERS} may create {PLURAL}")
    return name


def service_account(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user name and groups the apiserver gives a ServiceAccount's token."""
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
    )


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pkcs10(
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str | None = None,
    dns_names: list[str] | None = None,
    uris: list[str] | None = None,
    ip_addresses: list[str] | None = None,
) -> bytes:
    """A PEM PKCS#10 request signed by ``key``, asking for these names."""
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names or []]
    names += [x509.UniformResourceIdentifier(u) for u in uris or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses or []]
    subject = [x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def create_csr(
    kube: Kube,
    signer: str,
    request: bytes,
    *,
    user: str,
    groups: list[str] | None = None,
    usages: list[str] | None = None,
    expiration_seconds: int | None = None,
) -> str:
    """Create a request as ``user`` (in ``groups`` and the requesters' group); its name."""
    spec: dict[str, Any] = {
        "signerName": signer,
        "request": base64.b64encode(request).decode(),
        "usages": usages or USAGES,
    }
    if expiration_seconds is not None:
        spec["expirationSeconds"] = expiration_seconds
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": spec,
    }
    impersonation = [f"--as={user}", f"--as-group={REQUESTERS}"]
    impersonation += [f"--as-group={group}" for group in groups or []]
    result = kube.kubectl("create", "-f", "-", "-o", "json", *impersonation, input=json.dumps(body))
    name: str = json.loads(result.stdout)["metadata"]["name"]
    return name


def approve(kube: Kube, name: str) -> None:
    """Approve as the test admin (kubectl writes the /approval subresource)."""
    kube.kubectl("certificate", "approve", name)


def get_csr(kube: Kube, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    return body


def failed(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's Failed condition, if it has one."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed":
            return dict(condition)
    return None


def certificate(body: dict[str, Any]) -> str:
    """status.certificate as PEM text; empty if none."""
    return base64.b64decode((body.get("status") or {}).get("certificate") or "").decode()


def wait_answered(kube: Kube, name: str, timeout: float = 30) -> dict[str, Any]:
    """The request once it carries a certificate or a Failed condition."""

    def answered() -> dict[str, Any] | None:
        body = get_csr(kube, name)
        return body if certificate(body) or failed(body) else None

    result: dict[str, Any] = eventually(
        answered, timeout=timeout, what=f"CertificateSigningRequest {name} answered"
    )
    return result

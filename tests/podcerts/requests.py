"""PodCertificateRequests the way the kubelet makes them, without a kubelet.

NodeRestriction lets only ``system:node:<node>`` create a request for a pod bound to that
node, and only for a signer the pod mounts as a ``podCertificate`` volume; the apiserver
checks the pod, ServiceAccount and node against the live objects. So a test creates a Node
object and a Pod bound to it (which never runs: nothing serves the node) and then creates
requests as the node, through kubectl's impersonation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from tests.kube import Kube, eventually

GROUP = "certificates.k8s.io"
VERSION = "v1"
KEY_TYPES = ("RSA3072", "RSA4096", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519")


def generate_key(key_type: str) -> PrivateKeyTypes:
    if key_type.startswith("RSA"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type.startswith("ECDSAP"):
        curve = {"256": ec.SECP256R1, "384": ec.SECP384R1, "521": ec.SECP521R1}[key_type[6:]]
        return ec.generate_private_key(curve())
    return ed25519.Ed25519PrivateKey.generate()


def stub_csr(key: PrivateKeyTypes) -> str:
    """An empty-subject PKCS#10 request signed by ``key``, base64 (the kubelet's stub)."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(
            key,  # type: ignore[arg-type]
            algorithm,
        )
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def proof_of_possession(key: PrivateKeyTypes, pod_uid: str) -> str:
    """v1beta1's proof: the pod UID's ASCII bytes signed as Go's crypto does (Ed25519 over
    the bytes; ECDSA and RSA-PSS over their SHA-256), base64."""
    data = pod_uid.encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(
            hashlib.sha256(data).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        signature = key.sign(data, pss, hashes.SHA256())
    return base64.b64encode(signature).decode()


def create_node(kube: Kube) -> dict[str, Any]:
    """A Node object no kubelet serves (cluster-scoped: the caller deletes it)."""
    name = f"pcr-node-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    node: dict[str, Any] = kube.api.sanitize_for_serialization(kube.core.read_node(name))
    return node


def create_pod(
    kube: Kube, namespace: str, node: str, service_account: str, signers: list[str]
) -> dict[str, Any]:
    """A pod bound to ``node`` that mounts one podCertificate volume per signer."""
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace},
        }
    )
    volumes = [
        {
            "name": f"id-{index}",
            "projected": {
                "sources": [
                    {
                        "podCertificate": {
                            "signerName": signer,
                            "keyType": "ECDSAP256",
                            "credentialBundlePath": "bundle.pem",
                        }
                    }
                ]
            },
        }
        for index, signer in enumerate(signers)
    ]
    name = f"pod-{uuid.uuid4().hex[:6]}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "containers": [
                    {
                        "name": "app",
                        "image": "signet.invalid/never-runs",
                        "volumeMounts": [
                            {"name": v["name"], "mountPath": f"/var/run/{v['name']}"}
                            for v in volumes
                        ],
                    }
                ],
                "volumes": volumes,
            },
        }
    )
    pod: dict[str, Any] = kube.api.sanitize_for_serialization(
        kube.core.read_namespaced_pod(name, namespace)
    )
    return pod


def create_request(
    kube: Kube,
    pod: dict[str, Any],
    node: dict[str, Any],
    signer: str,
    key: PrivateKeyTypes,
    *,
    as_node: str | None = None,
    max_expiration_seconds: int | None = None,
    user_annotations: dict[str, str] | None = None,
    check: bool = True,
    v1beta1: bool = False,
) -> str:
    """Create a request as the node (``as_node`` impersonates another); its name, or the
    apiserver's refusal when ``check`` is false. ``v1beta1`` asks as a kubelet older than
    v1.36 does: the key as ``pkixPublicKey`` with a proof of possession, no stub CSR."""
    namespace = pod["metadata"]["namespace"]
    account = pod["spec"]["serviceAccountName"]
    sa = kube.core.read_namespaced_service_account(account, namespace)
    spec: dict[str, Any] = {
        "signerName": signer,
        "podName": pod["metadata"]["name"],
        "podUID": pod["metadata"]["uid"],
        "serviceAccountName": account,
        "serviceAccountUID": sa.metadata.uid,
        "nodeName": node["metadata"]["name"],
        "nodeUID": node["metadata"]["uid"],
    }
    if v1beta1:
        spec["pkixPublicKey"] = base64.b64encode(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
        spec["proofOfPossession"] = proof_of_possession(key, pod["metadata"]["uid"])
    else:
        spec["stubPKCS10Request"] = stub_csr(key)
    if max_expiration_seconds is not None:
        spec["maxExpirationSeconds"] = max_expiration_seconds
    if user_annotations:
        spec["unverifiedUserAnnotations"] = user_annotations
    body = {
        "apiVersion": f"{GROUP}/{'v1beta1' if v1beta1 else VERSION}",
        "kind": "PodCertificateRequest",
        "metadata": {
            "generateName": "req-",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                }
            ],
        },
        "spec": spec,
    }
    user = as_node or node["metadata"]["name"]
    result = kube.kubectl(
        "create", "-f", "-", "-o", "json",
        f"--as=system:node:{user}",
        "--as-group=system:nodes",
        "--as-group=system:authenticated",
        input=json.dumps(body),
        check=check,
    )  # fmt: skip
    if result.returncode != 0:
        return result.stderr
    name: str = json.loads(result.stdout)["metadata"]["name"]
    return name


def get_request(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "podcertificaterequests", name
    )
    return body


def answer(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's Issued, Denied or Failed condition, if it has one."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Issued", "Denied", "Failed"):
            return dict(condition)
    return None


def wait_answered(kube: Kube, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        body = get_request(kube, namespace, name)
        return body if answer(body) else None

    result: dict[str, Any] = eventually(
        answered, timeout=timeout, what=f"PodCertificateRequest {namespace}/{name} answered"
    )
    return result

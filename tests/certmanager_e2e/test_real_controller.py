"""End to end with the real cert-manager controller: its own CA issuer first (proving the
controller runs here without Signet), then cert-manager Certificates and an annotated
Ingress pointed at a Signet Issuer, judged by OpenSSL, the KMS public key, the KMS
signature count and the audit trail."""

from __future__ import annotations

import base64
import datetime
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.cloud import kms_v1

from signet.kms.emulator import Counters
from signet_dev import certmanager
from tests.kms_fixtures import KeyFactory
from tests.kube import ROOT, Kube, eventually
from tests.operator.harness import (
    OperatorProcess,
    issuer_manifest,
    secret_data,
    signatures,
    wait_issuer_ready,
)

pytestmark = pytest.mark.cluster

CM_GROUP, CM_VERSION = "cert-manager.io", "v1"
EXTERNAL_ISSUER = ROOT / "operator" / "signet" / "controller" / "certificaterequests.py"
needs_external_issuer = pytest.mark.skipif(
    not EXTERNAL_ISSUER.exists(),
    reason="Signet's cert-manager external issuer (controller/certificaterequests.py) is not "
    "in this tree yet",
)


def _condition(body: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def _get(kube: Kube, namespace: str, plural: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        CM_GROUP, CM_VERSION, namespace, plural, name
    )
    return body


def _wait_ready(
    kube: Kube, namespace: str, plural: str, name: str, timeout: float = 90
) -> dict[str, Any]:
    """The object once cert-manager's Ready condition is True. For a Certificate also its
    revision: the readiness controller may call a valid Secret Ready before the issuing
    controller has recorded the revision that wrote it."""

    def check() -> dict[str, Any] | None:
        body = _get(kube, namespace, plural, name)
        if plural == "certificates" and "revision" not in (body.get("status") or {}):
            return None
        return body if _condition(body).get("status") == "True" else None

    found: dict[str, Any] = eventually(
        check, timeout=timeout, what=f"cert-manager {plural} {namespace}/{name} Ready"
    )
    return found


def _certificate(
    name: str, namespace: str, issuer_ref: dict[str, str], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{CM_GROUP}/{CM_VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "secretName": f"{name}-tls",
            "dnsNames": [f"{name}.{namespace}.svc"],
            "issuerRef": issuer_ref,
            **spec,
        },
    }


def _openssl_verify(folder: Path, chain_pem: bytes, ca_pem: bytes) -> None:
    (folder / "chain.pem").write_bytes(chain_pem)
    (folder / "ca.pem").write_bytes(ca_pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
         "-CAfile", str(folder / "ca.pem"), str(folder / "chain.pem")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _key_matches(data: dict[str, bytes]) -> None:
    """tls.key is the private half of tls.crt's public key (cert-manager made the key)."""
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*der) == leaf.public_key().public_bytes(*der)


def _ca_secret(kube: Kube, namespace: str, name: str) -> bytes:
    """A CA key pair in a Secret, as cert-manager's CA issuer reads one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-manager test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": name},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert_pem).decode(),
                "tls.key": base64.b64encode(key_pem).decode(),
            },
        },
    )
    return cert_pem


def test_cert_manager_issues_with_its_own_ca_issuer(
    crds: Kube,
    cert_manager_controller: certmanager.CertManagerController,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The controller runs here at all: cert-manager alone, no Signet object involved."""
    ca_pem = _ca_secret(crds, namespace, "ca-key-pair")
    crds.apply(
        {
            "apiVersion": f"{CM_GROUP}/{CM_VERSION}",
            "kind": "Issuer",
            "metadata": {"name": "cm-ca", "namespace": namespace},
            "spec": {"ca": {"secretName": "ca-key-pair"}},
        }
    )
    _wait_ready(crds, namespace, "issuers", "cm-ca")
    crds.apply(_certificate("web", namespace, {"name": "cm-ca", "kind": "Issuer"}))
    certificate = _wait_ready(crds, namespace, "certificates", "web")

    assert certificate["status"]["revision"] == 1
    data = secret_data(crds, namespace, "web-tls")
    assert data["ca.crt"] == ca_pem
    _openssl_verify(tmp_path, data["tls.crt"], ca_pem)
    _key_matches(data)
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"web.{namespace}.svc"]
    cert_manager_controller.check_alive()


def _signet_issuer(kube: Kube, namespace: str, kms_key_factory: KeyFactory) -> dict[str, Any]:
    """A Ready Signet Issuer on a KMS key of its own (its signature count is this test's)."""
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    kube.apply(issuer_manifest("signet-ca", key_version, namespace=namespace))
    return wait_issuer_ready(kube, namespace, "signet-ca")


def _signed_by_kms_key(
    kms_admin: kms_v1.KeyManagementServiceClient, issuer: dict[str, Any], leaf_pem: bytes
) -> None:
    """The leaf's signature checks out against the public key KMS reports for the key
    version (not only against the CA certificate Signet published)."""
    version = issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    public = serialization.load_pem_public_key(kms_admin.get_public_key(name=version).pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    assert leaf.signature_hash_algorithm is not None
    public.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )


def _signature_records(operator: OperatorProcess, namespace: str, certificate: str) -> list[Any]:
    return [
        r
        for r in operator.audit_all()
        if r.get("kind") == "signet.dev/signature"
        and (r.get("certManagerCertificate") or {}).get("namespace") == namespace
        and (r.get("certManagerCertificate") or {}).get("name") == certificate
    ]


def _check_issued_by_signet(
    kube: Kube,
    namespace: str,
    certificate: str,
    issuer: dict[str, Any],
    operator: OperatorProcess,
    kms_admin: kms_v1.KeyManagementServiceClient,
    folder: Path,
) -> x509.Certificate:
    """The Certificate is Ready at its first revision, its Secret chains to the Signet
    issuer's CA and is signed by the KMS key, with exactly one audit record."""
    body = _wait_ready(kube, namespace, "certificates", certificate)
    assert body["status"]["revision"] == 1, body["status"]
    ca_pem = issuer["status"]["caCertificate"].encode()
    data = secret_data(kube, namespace, body["spec"]["secretName"])
    assert data["ca.crt"] == ca_pem
    _openssl_verify(folder, data["tls.crt"], ca_pem)
    _key_matches(data)
    _signed_by_kms_key(kms_admin, issuer, data["tls.crt"])
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    (record,) = _signature_records(operator, namespace, certificate)
    assert record["serialNumber"] == format(leaf.serial_number, "x")
    return leaf


@needs_external_issuer
def test_a_certificate_for_a_signet_issuer_ends_ready_signed_by_the_kms_key(
    crds: Kube,
    cert_manager_controller: certmanager.CertManagerController,
    signet_operator: OperatorProcess,
    namespace: str,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    kms_admin: kms_v1.KeyManagementServiceClient,
    tmp_path: Path,
) -> None:
    issuer = _signet_issuer(crds, namespace, kms_key_factory)
    before = signatures(kms_counters, issuer)
    ref = {"group": "signet.dev", "kind": "Issuer", "name": "signet-ca"}
    crds.apply(_certificate("shop", namespace, ref))

    leaf = _check_issued_by_signet(
        crds, namespace, "shop", issuer, signet_operator, kms_admin, tmp_path
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"shop.{namespace}.svc"]
    assert signatures(kms_counters, issuer) - before == 1
    cert_manager_controller.check_alive()


@needs_external_issuer
def test_an_annotated_ingress_gets_its_tls_secret_from_a_signet_issuer(
    crds: Kube,
    cert_manager_controller: certmanager.CertManagerController,
    signet_operator: OperatorProcess,
    namespace: str,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    kms_admin: kms_v1.KeyManagementServiceClient,
    tmp_path: Path,
) -> None:
    issuer = _signet_issuer(crds, namespace, kms_key_factory)
    before = signatures(kms_counters, issuer)
    host = f"app.{namespace}.svc"
    crds.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "app",
                "namespace": namespace,
                "annotations": {
                    "cert-manager.io/issuer": "signet-ca",
                    "cert-manager.io/issuer-kind": "Issuer",
                    "cert-manager.io/issuer-group": "signet.dev",
                },
            },
            "spec": {
                "tls": [{"hosts": [host], "secretName": "app-tls"}],
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "app", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        }
    )

    # ingress-shim names the Certificate after the TLS Secret and owns it by the Ingress.
    certificate = eventually(
        lambda: _get(crds, namespace, "certificates", "app-tls"),
        what="ingress-shim's Certificate app-tls",
    )
    assert certificate["spec"]["issuerRef"] == {
        "group": "signet.dev", "kind": "Issuer", "name": "signet-ca",
    }  # fmt: skip
    assert certificate["metadata"]["ownerReferences"][0]["kind"] == "Ingress"
    leaf = _check_issued_by_signet(
        crds, namespace, "app-tls", issuer, signet_operator, kms_admin, tmp_path
    )
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [host]
    assert signatures(kms_counters, issuer) - before == 1
    cert_manager_controller.check_alive()

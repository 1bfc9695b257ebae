"""`signet inspect` reports what openssl and ssh-keygen see, and never any key material."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.kube import Kube
from tests.operator.harness import certificate_manifest, secret_data, wait_condition
from tests.ops.cli import field, signet

pytestmark = pytest.mark.cluster


def _run(*command: str, input: bytes | None = None) -> str:
    return subprocess.run(command, input=input, capture_output=True, check=True).stdout.decode()


def _no_key_material(output: str, *private_keys: bytes) -> None:
    assert "PRIVATE KEY" not in output
    for key in private_keys:
        body = [line for line in key.decode().splitlines() if line and "-----" not in line]
        assert body
        for line in body:
            assert line not in output


def test_x509_secret_matches_openssl(
    crds: Kube, namespace: str, issuer: dict[str, Any], tmp_path: Path
) -> None:
    crds.apply(
        certificate_manifest(
            "web",
            namespace,
            "ca",
            x509={"dnsNames": [f"web.{namespace}.svc"], "spiffe": {"serviceAccount": "web"}},
        )
    )
    cert = wait_condition(crds, namespace, "web")
    data = secret_data(crds, namespace, "web-identity")

    result = signet("inspect", "web-identity", "-n", namespace, kubeconfig=crds.kubeconfig)

    assert result.code == 0, result.err
    out = result.out
    assert field(out, "Secret") == f"{namespace}/web-identity (kubernetes.io/tls)"
    assert field(out, "Certificate") == f"{namespace}/web"
    assert field(out, "Issued by") == "Issuer ca"
    assert field(out, "KMS key version") == issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    assert field(out, "SPIFFE ID") == f"spiffe://cluster.local/ns/{namespace}/sa/web"
    assert field(out, "SPIFFE ID") == cert["status"]["spiffeID"]
    assert field(out, "DNS names") == f"web.{namespace}.svc"
    assert field(out, "Serial") == cert["status"]["serialNumber"]
    assert field(out, "Issuer") == "CN=ca CA"
    assert field(out, "Key algorithm") == "ECDSA P-256"
    assert field(out, "Signature") == "ECDSA-with-SHA256"
    assert field(out, "Private key") == "matches the certificate"
    assert field(out, "Chain check") == "valid: signed by CN=ca CA (ca.crt)"
    openssl = _run("openssl", "x509", "-noout", "-fingerprint", "-sha256", input=data["tls.crt"])
    assert field(out, "SHA-256") == openssl.strip().split("=", 1)[1]
    pubkey = _run("openssl", "x509", "-noout", "-pubkey", input=data["tls.crt"])
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pubkey.encode(),
        capture_output=True,
        check=True,
    ).stdout
    digest = _run("openssl", "dgst", "-sha256", "-r", input=der).split()[0]
    assert field(out, "SPKI SHA-256") == digest
    assert "expires in" in field(out, "Validity")
    _no_key_material(out, data["tls.key"])


def test_a_key_that_does_not_fit_is_reported(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    for name in ("one", "two"):
        crds.apply(certificate_manifest(name, namespace, "ca"))
    for name in ("one", "two"):
        wait_condition(crds, namespace, name)
    one, two = (secret_data(crds, namespace, f"{n}-identity") for n in ("one", "two"))
    mixed = {"tls.crt": one["tls.crt"], "tls.key": two["tls.key"], "ca.crt": one["ca.crt"]}
    crds.core.create_namespaced_secret(
        namespace,
        kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name="mixed"),
            type="kubernetes.io/tls",
            data={k: base64.b64encode(v).decode() for k, v in mixed.items()},
        ),
    )
    result = signet("inspect", "mixed", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert result.code == 0, result.err
    assert field(result.out, "Private key") == "DOES NOT MATCH"
    _no_key_material(result.out, two["tls.key"])


def test_ssh_secret_matches_ssh_keygen(
    crds: Kube, namespace: str, make_issuer: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    make_issuer(policy={"allowedSSHCriticalOptions": ["force-command", "source-address"]})
    principal = f"{namespace}-deploy"
    crds.apply(
        certificate_manifest(
            "deploy",
            namespace,
            "ca",
            ssh={"type": "user", "principals": [principal], "criticalOptions": {
                "forceCommand": "uptime", "sourceAddress": ["10.0.0.0/8"],
            }},
        )
    )  # fmt: skip
    cert = wait_condition(crds, namespace, "deploy")
    data = secret_data(crds, namespace, "deploy-identity")

    result = signet("inspect", "deploy-identity", "-n", namespace, kubeconfig=crds.kubeconfig)

    assert result.code == 0, result.err
    out = result.out
    path = tmp_path / "cert.pub"
    path.write_bytes(data["ssh-certificate"])
    listing = [line.strip() for line in _run("ssh-keygen", "-L", "-f", str(path)).splitlines()]
    assert f'Key ID: "{field(out, "Key ID")}"' in listing
    assert field(out, "Key ID") == f"{namespace}/deploy"
    assert f"Serial: {field(out, 'Serial')}" in listing
    assert field(out, "Serial") == cert["status"]["serialNumber"]
    assert field(out, "Principals") == principal
    assert field(out, "Critical options") == "force-command uptime, source-address 10.0.0.0/8"
    assert field(out, "Extensions") == "permit-pty"
    assert field(out, "Type").startswith("user certificate (ecdsa-sha2-nistp256-cert-v01@")
    ca_fingerprint = _run("ssh-keygen", "-l", "-f", "/dev/stdin", input=data["ssh-ca.pub"])
    assert field(out, "CA fingerprint") == ca_fingerprint.split()[1]
    assert field(out, "CA signature") == "valid"
    assert field(out, "CA in Secret") == "same key (ssh-ca.pub)"
    assert field(out, "Private key") == "matches the certificate"
    _no_key_material(out, data["ssh-privatekey"])


def test_local_files(crds: Kube, namespace: str, issuer: dict[str, Any], tmp_path: Path) -> None:
    crds.apply(certificate_manifest("file", namespace, "ca"))
    wait_condition(crds, namespace, "file")
    data = secret_data(crds, namespace, "file-identity")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(data["tls.crt"] + data["tls.key"])
    ca = tmp_path / "ca.crt"
    ca.write_bytes(data["ca.crt"])

    result = signet("inspect", "--file", str(combined), "--ca", str(ca))
    assert result.code == 0, result.err
    assert field(result.out, "File") == str(combined)
    assert field(result.out, "DNS names") == f"file.{namespace}.svc"
    assert field(result.out, "Private key") == "matches the certificate"
    assert field(result.out, "Chain check").startswith("valid")
    _no_key_material(result.out, data["tls.key"])

    key_only = tmp_path / "tls.key"
    key_only.write_bytes(data["tls.key"])
    refused = signet("inspect", "--file", str(key_only))
    assert refused.code == 1
    assert refused.err == (
        "error: this file holds only a private key; pass the certificate instead\n"
    )
    assert refused.out == ""

    missing = signet("inspect", "nothing-here", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert (missing.code, missing.err) == (1, f"error: Secret {namespace}/nothing-here not found\n")

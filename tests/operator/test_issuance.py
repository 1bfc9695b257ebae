"""Issuance on the real apiserver through the KMS emulator, judged by OpenSSL and OpenSSH."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.kms.emulator import Counters
from tests.kube import Kube, eventually, wait_event
from tests.operator.harness import (
    OperatorProcess,
    certificate_manifest,
    condition,
    secret_data,
    signatures,
    wait_condition,
)

pytestmark = pytest.mark.cluster

KMS_ALGORITHMS = [
    "EC_SIGN_P256_SHA256",
    "EC_SIGN_P384_SHA384",
    "RSA_SIGN_PKCS1_2048_SHA256",
    "RSA_SIGN_PSS_2048_SHA256",
    "EC_SIGN_ED25519",
]
LEAF_KEYS = [
    {"algorithm": "ECDSA", "size": 256},
    {"algorithm": "ECDSA", "size": 384},
    {"algorithm": "RSA", "size": 2048},
    {"algorithm": "RSA", "size": 3072},
    {"algorithm": "Ed25519"},
]


def _openssl_verify(folder: Path, data: dict[str, bytes]) -> None:
    chain = x509.load_pem_x509_certificates(data["tls.crt"])
    (folder / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (folder / "untrusted.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:])
    )
    (folder / "ca.pem").write_bytes(data["ca.crt"])
    args = ["openssl", "verify", "-x509_strict", "-CAfile", str(folder / "ca.pem")]
    if len(chain) > 1:
        args += ["-untrusted", str(folder / "untrusted.pem")]
    result = subprocess.run([*args, str(folder / "leaf.pem")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (folder / "key.pem").write_bytes(data["tls.key"])
    pub_from_key = subprocess.run(
        ["openssl", "pkey", "-in", str(folder / "key.pem"), "-pubout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pub_from_cert = subprocess.run(
        ["openssl", "x509", "-in", str(folder / "leaf.pem"), "-noout", "-pubkey"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pub_from_key == pub_from_cert


@pytest.mark.parametrize("kms_algorithm", KMS_ALGORITHMS)
def test_x509_for_every_kms_algorithm_and_leaf_key(
    crds: Kube,
    namespace: str,
    make_issuer: Callable[..., dict[str, Any]],
    kms_algorithm: str,
    tmp_path: Path,
    kms_counters: Counters,
) -> None:
    issuer = make_issuer(
        "ca", kms_algorithm, ssh={"enabled": not kms_algorithm.startswith("RSA_SIGN_PSS")}
    )
    signs_before = signatures(kms_counters, issuer)
    names = []
    for index, key in enumerate(LEAF_KEYS):
        name = f"leaf-{index}"
        names.append(name)
        crds.apply(
            certificate_manifest(
                name,
                namespace,
                "ca",
                privateKey=key,
                x509={"dnsNames": [f"{name}.{namespace}.svc"], "spiffe": {"serviceAccount": name}},
            )
        )
    for name in names:
        obj = wait_condition(crds, namespace, name, timeout=60)
        data = secret_data(crds, namespace, f"{name}-identity")
        folder = tmp_path / name
        folder.mkdir()
        _openssl_verify(folder, data)
        leaf = x509.load_pem_x509_certificates(data["tls.crt"])[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        spiffe = f"spiffe://cluster.local/ns/{namespace}/sa/{name}"
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
        assert obj["status"]["spiffeID"] == spiffe
        assert obj["status"]["serialNumber"] == format(leaf.serial_number, "x")
        assert obj["status"]["revision"] == 1
        assert condition(obj, "Issuing")["reason"] == "Issued"
    # exactly one KMS signature per issued certificate
    assert signatures(kms_counters, issuer) - signs_before == len(LEAF_KEYS)


@pytest.mark.parametrize(
    "kms_algorithm", ["EC_SIGN_P256_SHA256", "EC_SIGN_ED25519", "RSA_SIGN_PKCS1_2048_SHA256"]
)
def test_ssh_user_and_host_certificates(
    crds: Kube,
    namespace: str,
    make_issuer: Callable[..., dict[str, Any]],
    kms_algorithm: str,
    tmp_path: Path,
) -> None:
    make_issuer("ca", kms_algorithm)
    crds.apply(
        certificate_manifest(
            "ops",
            namespace,
            "ca",
            ssh={
                "type": "user",
                "principals": [f"{namespace}-ops"],
                "criticalOptions": {"sourceAddress": ["10.0.0.0/8"]},
                "extensions": ["permit-pty"],
            },
            privateKey={"algorithm": "Ed25519"},
        )
    )
    crds.apply(
        certificate_manifest(
            "host", namespace, "ca", ssh={"type": "host", "principals": [f"{namespace}-db"]}
        )
    )
    for name, kind, principal in (
        ("ops", "user", f"{namespace}-ops"),
        ("host", "host", f"{namespace}-db"),
    ):
        wait_condition(crds, namespace, name)
        data = secret_data(crds, namespace, f"{name}-identity")
        assert set(data) == {"ssh-privatekey", "ssh-publickey", "ssh-certificate", "ssh-ca.pub"}
        (tmp_path / f"{name}-cert.pub").write_bytes(data["ssh-certificate"])
        listing = subprocess.run(
            ["ssh-keygen", "-L", "-f", str(tmp_path / f"{name}-cert.pub")],
            capture_output=True,
            text=True,
        )
        assert listing.returncode == 0, listing.stderr
        assert f"{kind} certificate" in listing.stdout
        assert principal in listing.stdout
        assert f'Key ID: "{namespace}/{name}"' in listing.stdout
        # the CA key in the Secret is the one that signed, as ssh-keygen reports it
        ca_fp = (
            subprocess.run(
                ["ssh-keygen", "-l", "-f", "/dev/stdin"],
                input=data["ssh-ca.pub"],
                capture_output=True,
                check=True,
            )
            .stdout.split()[1]
            .decode()
        )
        assert "Signing CA: " in listing.stdout and ca_fp in listing.stdout
        if name == "ops":
            assert "source-address 10.0.0.0/8" in listing.stdout
            assert "permit-pty" in listing.stdout


def test_trust_bundle_published_and_audit_record_per_signature(
    crds: Kube,
    namespace: str,
    issuer: dict[str, Any],
    signet_operator: OperatorProcess,
) -> None:
    crds.apply(certificate_manifest("web", namespace, "ca"))
    obj = wait_condition(crds, namespace, "web")
    # Ready promises the bundle: it is there at once, and was written before the status
    # (one etcd here, so resourceVersions are its revisions and compare as numbers).
    bundle = crds.core.read_namespaced_config_map("signet-issuer-ca-ca", namespace)
    assert int(bundle.metadata.resource_version) < int(obj["metadata"]["resourceVersion"])
    assert bundle.data["ca.crt"] == issuer["status"]["caCertificate"]
    assert bundle.data["ssh-ca.pub"].strip() == issuer["status"]["sshCAPublicKey"]
    records = eventually(
        lambda: [
            r
            for r in signet_operator.audit_records()
            if r["certificate"]["namespace"] == namespace
            and r["serialNumber"] == obj["status"]["serialNumber"]
        ],
        what="audit record",
    )
    (record,) = records
    assert record["outcome"] == "signed"
    assert record["keyVersion"] == issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    assert record["certificate"]["uid"] == obj["metadata"]["uid"]
    assert record["dnsNames"] == [f"web.{namespace}.svc"]
    assert record["trigger"] == "DoesNotExist"
    assert len(record["publicKeyFingerprint"]) == 64
    wait_event(crds, namespace, "web", "Issued", contains=obj["status"]["serialNumber"])
    metrics = signet_operator.metrics()
    assert (
        f'signet_certificate_ready_status{{condition="True",issuer_kind="Issuer",issuer_name="ca",'
        f'name="web",namespace="{namespace}"}} 1.0' in metrics
    )
    assert "signet_kms_sign_duration_seconds_count" in metrics

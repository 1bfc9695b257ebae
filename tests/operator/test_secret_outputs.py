"""cert-manager's Secret outputs on the real apiserver: keystores, extra formats and key
encoding written with the certificate, rewritten without a signature when only they change,
rebuilt at renewal, and a missing password a named, retried condition that costs no
signature. OpenSSL (and Java's keytool, where installed) judge the keystores."""

from __future__ import annotations

import base64
import datetime
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signet.kms.emulator import Counters
from tests.kube import Kube, eventually, wait_event
from tests.operator.harness import (
    certificate_manifest,
    condition,
    get_certificate,
    secret_data,
    signatures,
    wait_condition,
)

pytestmark = pytest.mark.cluster

PASSWORD = "s3cret password"


def _password_secret(kube: Kube, namespace: str, value: str = PASSWORD) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keystore-password", "namespace": namespace},
            "data": {"password": base64.b64encode(value.encode()).decode()},
        }
    )


def _manifest(namespace: str, **spec: Any) -> dict[str, Any]:
    return certificate_manifest(
        "java",
        namespace,
        "ca",
        privateKey={"algorithm": "RSA", "size": 2048},
        keystores={
            "pkcs12": {
                "create": True,
                "passwordSecretRef": {"name": "keystore-password", "key": "password"},
            }
        },
        additionalOutputFormats=[{"type": "CombinedPEM"}, {"type": "DER"}],
        **spec,
    )


def _judge(folder: Path, data: dict[str, bytes], password: str = PASSWORD) -> None:
    """The keystore holds exactly tls.key and tls.crt's chain; the other outputs agree."""
    folder.mkdir(exist_ok=True)
    for name, value in data.items():
        (folder / name).write_bytes(value)
    secret = f"pass:{password}"

    def openssl(*args: str) -> str:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    dumped = openssl("pkcs12", "-in", str(folder / "keystore.p12"), "-nodes", "-passin", secret)
    (folder / "dumped.pem").write_text(dumped)
    public = openssl("pkey", "-in", str(folder / "tls.key"), "-pubout")
    assert openssl("pkey", "-in", str(folder / "dumped.pem"), "-pubout") == public
    if "key.der" in data:
        der = str(folder / "key.der")
        assert openssl("pkey", "-inform", "DER", "-in", der, "-pubout") == public
    chain = x509.load_pem_x509_certificates(data["tls.crt"])
    assert x509.load_pem_x509_certificates(dumped.encode())[: len(chain)] == chain
    assert data["tls-combined.pem"] == data["tls.key"] + b"\n" + data["tls.crt"]
    assert data["keystore.p12"] and data["truststore.p12"]
    trusted = openssl("pkcs12", "-in", str(folder / "truststore.p12"), "-nokeys", "-passin", secret)
    assert x509.load_pem_x509_certificates(trusted.encode()) == x509.load_pem_x509_certificates(
        data["ca.crt"]
    )
    if shutil.which("keytool"):
        listed = subprocess.run(
            ["keytool", "-list", "-keystore", str(folder / "keystore.p12"), "-storetype", "PKCS12"],
            input=password + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert "PrivateKeyEntry" in listed.stdout, listed.stdout + listed.stderr


def test_a_missing_password_costs_no_signature_then_keystores_match_the_pem_files(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_counters: Counters, tmp_path: Path
) -> None:
    before = signatures(kms_counters, issuer)
    crds.apply(_manifest(namespace))
    waiting = wait_condition(
        crds, namespace, "java", status="False", reason="KeystorePasswordNotFound"
    )
    ready = condition(waiting, "Ready")
    assert "spec.keystores.pkcs12.passwordSecretRef" in ready["message"]
    assert f"Secret {namespace}/keystore-password" in ready["message"]
    assert waiting["status"].get("nextRetryTime")
    assert signatures(kms_counters, issuer) == before

    _password_secret(crds, namespace)
    done = wait_condition(crds, namespace, "java", timeout=60)  # the backoff's next retry
    assert signatures(kms_counters, issuer) == before + 1
    data = secret_data(crds, namespace, "java-identity")
    assert data["tls.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS1, the default
    assert set(data) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
        "keystore.p12",
        "truststore.p12",
        "tls-combined.pem",
        "key.der",
    }
    _judge(tmp_path / "first", data)
    assert done["status"]["revision"] == 1


def test_changing_outputs_rewrites_the_secret_without_signing_and_renewal_rebuilds_them(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_counters: Counters, tmp_path: Path
) -> None:
    _password_secret(crds, namespace)
    crds.apply(_manifest(namespace))
    first = wait_condition(crds, namespace, "java")
    serial = first["status"]["serialNumber"]
    signs = signatures(kms_counters, issuer)
    issued = secret_data(crds, namespace, "java-identity")

    crds.apply(
        certificate_manifest(
            "java",
            namespace,
            "ca",
            privateKey={"algorithm": "RSA", "size": 2048, "encoding": "PKCS8"},
            keystores={
                "pkcs12": {
                    "create": True,
                    "passwordSecretRef": {"name": "keystore-password", "key": "password"},
                    "profile": "Modern2023",
                }
            },
            additionalOutputFormats=[{"type": "CombinedPEM"}],
        )
    )

    def rewritten() -> dict[str, bytes] | None:
        data = secret_data(crds, namespace, "java-identity")
        return data if "key.der" not in data and b"BEGIN PRIVATE KEY" in data["tls.key"] else None

    data = eventually(rewritten, timeout=30, what="Secret rewritten for the new outputs")
    wait_event(crds, namespace, "java", "SecretRepaired")
    assert get_certificate(crds, namespace, "java")["status"]["serialNumber"] == serial
    assert signatures(kms_counters, issuer) == signs
    assert data["tls.crt"] == issued["tls.crt"] and data["ca.crt"] == issued["ca.crt"]
    info = subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-info",
            "-noout",
            "-in",
            "/dev/stdin",
            "-passin",
            f"pass:{PASSWORD}",
        ],
        input=data["keystore.p12"],
        capture_output=True,
        check=True,
    )
    assert b"AES-256-CBC" in info.stdout + info.stderr
    wait_condition(crds, namespace, "java", where=lambda o: o["status"]["serialNumber"] == serial)

    # A key someone deletes from the data is put back, still without a signature.
    crds.core.patch_namespaced_secret(
        "java-identity", namespace, {"data": {"truststore.p12": None}}
    )
    eventually(
        lambda: "truststore.p12" in secret_data(crds, namespace, "java-identity"),
        timeout=30,
        what="truststore.p12 put back",
    )
    assert signatures(kms_counters, issuer) == signs

    # Renewal: a new key and certificate, and keystores rebuilt from them.
    time.sleep(1.1)  # renewal requests are compared with issued-at at second granularity
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    crds.kubectl(
        "annotate", "certificate", "java", "-n", namespace, f"signet.dev/renew-requested-at={now}"
    )
    wait_condition(crds, namespace, "java", where=lambda o: o["status"]["serialNumber"] != serial)
    renewed = secret_data(crds, namespace, "java-identity")
    assert renewed["tls.key"] != data["tls.key"]
    assert signatures(kms_counters, issuer) == signs + 1
    assert renewed["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")
    _judge(tmp_path / "renewed", renewed)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "keystores": {
                    "jks": {"create": True, "passwordSecretRef": {"name": "p", "key": "k"}}
                }
            },
            "Signet does not write JKS keystores",
        ),
        (
            {"x509": {"dnsNames": ["a.example"], "usages": ["digital signature", "cert sign"]}},
            "Signet never issues CA certificates to workloads",
        ),
        (
            {"keystores": {"pkcs12": {"create": True}}},
            "exactly one of password or passwordSecretRef",
        ),
        ({"additionalOutputFormats": [{"type": "PFX"}]}, "Unsupported value"),
        (
            {
                "ssh": {"type": "user", "principals": ["a"]},
                "additionalOutputFormats": [{"type": "DER"}],
            },
            "for X.509 certificates only",
        ),
    ],
)
def test_the_schema_refuses_what_signet_will_not_write(
    crds: Kube, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = crds.apply(certificate_manifest("bad", namespace, "ca", **spec), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr

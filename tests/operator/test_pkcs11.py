"""Issuers whose CA key is on a PKCS#11 token (SoftHSM2), on the real apiserver.

The operator is the session's (``signet run`` as a child process); it reaches the token
through the same SoftHSM2 configuration as the test process (``tests.softhsm`` points
``SOFTHSM2_CONF`` at the session's folder before anything starts).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.api import GROUP, VERSION
from tests.kube import Kube, eventually
from tests.operator.harness import (
    OperatorProcess,
    certificate_manifest,
    condition,
    secret_data,
    wait_condition,
    wait_issuer_ready,
)
from tests.softhsm import LOCKED_KEY, LOCKED_TOKEN, SoftHsm

pytestmark = pytest.mark.cluster


def _pin_secret(kube: Kube, namespace: str, pin: str, name: str = "hsm-pin") -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"pin": base64.b64encode(pin.encode()).decode()},
        }
    )


def _issuer(name: str, namespace: str, hsm: SoftHsm, uri: str, **pkcs11: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kms": {
                "pkcs11": {
                    "uri": uri,
                    "module": hsm.module,
                    "pinSecretRef": {"name": "hsm-pin"},
                    **pkcs11,
                }
            },
            "x509": {"selfSigned": {"commonName": f"{name} HSM CA"}},
            "ssh": {"enabled": True},
        },
    }


def _issuer_condition(kube: Kube, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", name)
        ready = condition(obj, "Ready")
        return ready if ready.get("reason") == reason else None

    found: dict[str, Any] = eventually(check, timeout=30, what=f"issuer {name} {reason}")
    return found


def test_an_hsm_issuer_issues_a_certificate_openssl_verifies(
    crds: Kube,
    signet_operator: OperatorProcess,
    softhsm: SoftHsm,
    namespace: str,
    tmp_path: Path,
) -> None:
    _pin_secret(crds, namespace, softhsm.pin)
    uri = softhsm.uri("EC_SIGN_P256_SHA256")
    crds.apply(_issuer("hsm", namespace, softhsm, uri))
    issuer = wait_issuer_ready(crds, namespace, "hsm")
    key = "pkcs11:token=signet-test;object=ec-p256;type=private;id=%01"
    assert key in condition(issuer, "Ready")["message"]

    crds.apply(certificate_manifest("web", namespace, "hsm"))
    obj = wait_condition(crds, namespace, "web")
    data = secret_data(crds, namespace, "web-identity")
    chain = x509.load_pem_x509_certificates(data["tls.crt"])
    (tmp_path / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(data["ca.crt"])
    verify = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    assert ca.public_key() == _token_public_key(softhsm, "ec-p256")

    (record,) = eventually(
        lambda: [
            r
            for r in signet_operator.audit_records()
            if r["certificate"]["namespace"] == namespace
            and r["serialNumber"] == obj["status"]["serialNumber"]
        ],
        what="audit record",
    )
    assert record["outcome"] == "signed"
    assert record["keyVersion"] == key  # token and object, never the PIN
    everything = signet_operator.audit_log.read_text() + signet_operator.log.read_text()
    assert softhsm.pin not in everything
    metrics = signet_operator.metrics()
    assert 'backend="pkcs11"' in metrics and "signet_kms_sign_duration_seconds" in metrics


def _token_public_key(hsm: SoftHsm, label: str) -> Any:
    """The key's public half read from the token by the test itself (not the operator)."""
    import pkcs11
    from pkcs11 import ObjectClass
    from pkcs11.util.ec import encode_ec_public_key

    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.token)
    with token.open() as session:
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
        return serialization.load_der_public_key(encode_ec_public_key(public))


@pytest.mark.parametrize(
    ("case", "reason", "words"),
    [
        ("wrong-pin", "HSMLoginFailed", "refused the PIN"),
        ("missing-object", "KMSKeyNotFound", "no private key object 'no-such-key'"),
        ("missing-token", "HSMTokenNotFound", "no token 'no-such-token'"),
        ("missing-pin-secret", "HSMPINNotFound", "PIN Secret {ns}/hsm-pin not found"),
        ("wrong-key-type", "KMSWrongAlgorithm", "does not fit"),
    ],
)
def test_hsm_failures_are_named_issuer_conditions(
    crds: Kube,
    signet_operator: OperatorProcess,
    softhsm: SoftHsm,
    namespace: str,
    case: str,
    reason: str,
    words: str,
) -> None:
    wrong_pin = "11112222"
    options: dict[str, Any] = {}
    uri = softhsm.uri("EC_SIGN_P256_SHA256")
    if case in ("wrong-pin", "missing-pin-secret"):  # a token this process never logs in to
        uri = f"pkcs11:token={LOCKED_TOKEN};object={LOCKED_KEY[0]}"
    elif case == "missing-object":
        uri = f"pkcs11:token={softhsm.token};object=no-such-key"
    elif case == "missing-token":
        uri = softhsm.uri("EC_SIGN_P256_SHA256", token="no-such-token")
    elif case == "wrong-key-type":
        options["algorithm"] = "RSA_SIGN_PSS_2048_SHA256"
    if case != "missing-pin-secret":
        _pin_secret(crds, namespace, wrong_pin if case == "wrong-pin" else softhsm.pin)
    crds.apply(_issuer("bad", namespace, softhsm, uri, **options))
    ready = _issuer_condition(crds, namespace, "bad", reason)
    assert ready["status"] == "False"
    assert words.replace("{ns}", namespace) in ready["message"]
    assert wrong_pin not in ready["message"] and softhsm.pin not in ready["message"]
    assert wrong_pin not in signet_operator.log.read_text()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:token=a;object=k?pin-value=1234", "must not carry a PIN"),
        ("pkcs11:object=k", "must select a token"),
        ("pkcs11:token=a;object=%zz", "percent-encoded byte"),
    ],
)
def test_the_crd_refuses_a_bad_uri_at_admission(
    crds: Kube, softhsm: SoftHsm, namespace: str, uri: str, message: str
) -> None:
    result = crds.apply(_issuer("refused", namespace, softhsm, uri), check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_crd_wants_exactly_one_of_cloudkms_and_pkcs11(
    crds: Kube, softhsm: SoftHsm, namespace: str
) -> None:
    body = _issuer("both", namespace, softhsm, softhsm.uri("EC_SIGN_P256_SHA256"))
    body["spec"]["kms"]["cloudKMS"] = {
        "keyVersion": "projects/signet-test/locations/global/keyRings/r/cryptoKeys/k"
        "/cryptoKeyVersions/1"
    }
    result = crds.apply(body, check=False)
    assert result.returncode != 0
    assert "exactly one of kms.cloudKMS or kms.pkcs11 must be set" in result.stderr

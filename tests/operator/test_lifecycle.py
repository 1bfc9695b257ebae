"""Re-issue, repair and renewal: each trigger named, each one costing exactly one signature."""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signet.api import GROUP, VERSION
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


def _issued(kube: Kube, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    kube.apply(certificate_manifest(name, namespace, "ca", **spec))
    return wait_condition(kube, namespace, name)


def _reissued(
    kube: Kube, namespace: str, name: str, old_serial: str, reason: str
) -> dict[str, Any]:
    obj = wait_condition(
        kube, namespace, name, where=lambda o: o["status"].get("serialNumber") != old_serial
    )
    issuing = condition(obj, "Issuing")
    assert issuing["reason"] == "Issued"
    assert f"because {reason}" in issuing["message"], issuing["message"]
    return obj


def test_secret_deleted_is_reissued(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_counters: Counters
) -> None:
    first = _issued(crds, namespace, "web")
    signs = signatures(kms_counters, issuer)
    crds.core.delete_namespaced_secret("web-identity", namespace)
    second = _reissued(crds, namespace, "web", first["status"]["serialNumber"], "DoesNotExist")
    assert second["status"]["revision"] == 2
    assert signatures(kms_counters, issuer) - signs == 1


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        ("swap-key", "KeyMismatch"),
        ("drop-ca", "MissingData"),
        ("garbage-cert", "InvalidCertificate"),
    ],
)
def test_broken_secret_is_reissued(
    crds: Kube, namespace: str, issuer: dict[str, Any], corrupt: str, reason: str
) -> None:
    first = _issued(crds, namespace, "web")
    secret = crds.core.read_namespaced_secret("web-identity", namespace)
    data = dict(secret.data)
    if corrupt == "swap-key":
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        data["tls.key"] = base64.b64encode(other).decode()
    elif corrupt == "drop-ca":
        data.pop("ca.crt")
    else:
        data["tls.crt"] = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnope\n").decode()
    crds.core.replace_namespaced_secret(
        "web-identity", namespace, {**secret.to_dict(), "data": data}
    )
    _reissued(crds, namespace, "web", first["status"]["serialNumber"], reason)
    healed = secret_data(crds, namespace, "web-identity")
    leaf = x509.load_pem_x509_certificates(healed["tls.crt"])[0]
    key = serialization.load_pem_private_key(healed["tls.key"], None)
    assert leaf.public_key() == key.public_key()


def test_spec_change_reissues_and_template_drift_is_repaired_without_signing(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_counters: Counters
) -> None:
    first = _issued(
        crds,
        namespace,
        "web",
        secretTemplate={"labels": {"team": "shop"}, "annotations": {"a": "1"}},
    )
    signs = signatures(kms_counters, issuer)
    crds.core.patch_namespaced_secret(
        "web-identity",
        namespace,
        {"metadata": {"labels": {"team": None}, "annotations": {"a": "2"}}},
    )

    def repaired() -> bool:
        meta = crds.core.read_namespaced_secret("web-identity", namespace).metadata
        return meta.labels.get("team") == "shop" and meta.annotations.get("a") == "1"

    eventually(repaired, what="secretTemplate drift repaired")
    assert (
        get_certificate(crds, namespace, "web")["status"]["serialNumber"]
        == first["status"]["serialNumber"]
    )
    assert signatures(kms_counters, issuer) == signs
    wait_event(crds, namespace, "web", "SecretRepaired")

    crds.apply(
        certificate_manifest(
            "web",
            namespace,
            "ca",
            x509={"dnsNames": [f"web.{namespace}.svc", f"api.{namespace}.svc"]},
            secretTemplate={"labels": {"team": "shop"}, "annotations": {"a": "1"}},
        )
    )
    second = _reissued(crds, namespace, "web", first["status"]["serialNumber"], "SpecChanged")
    leaf = x509.load_pem_x509_certificates(secret_data(crds, namespace, "web-identity")["tls.crt"])[
        0
    ]
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == [f"web.{namespace}.svc", f"api.{namespace}.svc"]
    assert second["status"]["observedGeneration"] == second["metadata"]["generation"] == 2
    assert signatures(kms_counters, issuer) == signs + 1


def test_short_lived_certificate_is_renewed_before_expiry(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    first = _issued(crds, namespace, "short", duration="1m", renewBefore="45s")
    renewal = datetime.datetime.fromisoformat(first["status"]["renewalTime"])
    not_after = datetime.datetime.fromisoformat(first["status"]["notAfter"])
    assert renewal < not_after - datetime.timedelta(seconds=44)
    second = wait_condition(
        crds,
        namespace,
        "short",
        timeout=60,
        where=lambda o: o["status"].get("serialNumber") != first["status"]["serialNumber"],
    )
    assert "because Renewing" in condition(second, "Issuing")["message"]
    renewed_at = datetime.datetime.now(datetime.UTC)
    assert renewed_at < not_after, "renewed only after the old certificate expired"
    assert datetime.datetime.fromisoformat(second["status"]["notAfter"]) > not_after


def test_rotation_policy_never_keeps_the_key(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    first = _issued(crds, namespace, "keep", privateKey={"rotationPolicy": "Never"})
    key_before = secret_data(crds, namespace, "keep-identity")["tls.key"]
    time.sleep(1.1)  # renewal requests are compared with issued-at at second granularity
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    crds.kubectl(
        "annotate", "certificate", "keep", "-n", namespace, f"signet.dev/renew-requested-at={now}"
    )
    _reissued(crds, namespace, "keep", first["status"]["serialNumber"], "ManuallyTriggered")
    assert secret_data(crds, namespace, "keep-identity")["tls.key"] == key_before


def test_certificate_deletion_garbage_collects_its_secret(
    crds: Kube, namespace: str, issuer: dict[str, Any], make_issuer: Callable[..., dict[str, Any]]
) -> None:
    _issued(crds, namespace, "gone")
    crds.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "certificates", "gone")
    eventually(
        lambda: (
            "gone-identity"
            not in [s.metadata.name for s in crds.core.list_namespaced_secret(namespace).items]
        ),
        timeout=30,
        what="Secret garbage-collected",
    )

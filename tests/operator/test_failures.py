"""KMS trouble, missing issuers, shared Secrets: precise reasons, backoff, nothing lost."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.cloud import kms_v1
from google.protobuf import field_mask_pb2

from signet.api import GROUP, VERSION
from signet.kms.emulator import Counters, Faults
from tests.kube import Kube, eventually, wait_event
from tests.operator.harness import (
    certificate_manifest,
    condition,
    get_certificate,
    issuer_manifest,
    signatures,
    wait_condition,
    wait_issuer_ready,
)

pytestmark = pytest.mark.cluster


def _renew_now(kube: Kube, namespace: str, name: str) -> None:
    time.sleep(1.1)  # renewal requests are compared with issued-at at second granularity
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.kubectl(
        "annotate",
        "--overwrite",
        "certificate",
        name,
        "-n",
        namespace,
        f"signet.dev/renew-requested-at={now}",
    )


def test_kms_outage_keeps_the_old_secret_and_recovers(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_faults: Faults
) -> None:
    crds.apply(certificate_manifest("web", namespace, "ca"))
    first = wait_condition(crds, namespace, "web")
    secret_before = crds.core.read_namespaced_secret("web-identity", namespace)
    kms_faults.error_code = grpc.StatusCode.UNAVAILABLE
    kms_faults.error_rate = 1.0
    _renew_now(crds, namespace, "web")
    failed = wait_condition(
        crds, namespace, "web", status="False", reason="KMSUnavailable", timeout=30
    )
    ready = condition(failed, "Ready")
    assert issuer["spec"]["kms"]["cloudKMS"]["keyVersion"] in ready["message"]
    assert "the current certificate stays valid until" in ready["message"]
    assert failed["status"]["failedIssuanceAttempts"] >= 1
    assert failed["status"]["nextRetryTime"]
    assert condition(failed, "Issuing")["status"] == "True"
    # backoff grows but stays bounded: attempts keep coming while KMS is down
    eventually(
        lambda: get_certificate(crds, namespace, "web")["status"]["failedIssuanceAttempts"] >= 2,
        timeout=30,
        what="a second, backed-off attempt",
    )
    secret_during = crds.core.read_namespaced_secret("web-identity", namespace)
    assert secret_during.metadata.resource_version == secret_before.metadata.resource_version
    kms_faults.reset()
    healed = wait_condition(
        crds,
        namespace,
        "web",
        timeout=40,
        where=lambda o: o["status"]["serialNumber"] != first["status"]["serialNumber"],
    )
    assert "failedIssuanceAttempts" not in healed["status"]
    wait_event(crds, namespace, "web", "KMSUnavailable", type="Warning")


def test_disabled_key_version_is_reported_and_reenabling_recovers(
    crds: Kube,
    namespace: str,
    make_issuer: Callable[..., dict[str, Any]],
    kms_key_factory: Callable[..., str],
    kms_admin: kms_v1.KeyManagementServiceClient,
) -> None:
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    crds.apply(issuer_manifest("ca", key_version, namespace=namespace))
    wait_issuer_ready(crds, namespace, "ca")

    def set_state(state: kms_v1.CryptoKeyVersion.CryptoKeyVersionState) -> None:
        kms_admin.update_crypto_key_version(
            crypto_key_version=kms_v1.CryptoKeyVersion(name=key_version, state=state),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )

    set_state(kms_v1.CryptoKeyVersion.CryptoKeyVersionState.DISABLED)
    crds.apply(certificate_manifest("web", namespace, "ca"))
    failed = wait_condition(crds, namespace, "web", status="False", reason="KMSKeyDisabled")
    assert key_version in condition(failed, "Ready")["message"]
    assert "web-identity" not in [
        s.metadata.name for s in crds.core.list_namespaced_secret(namespace).items
    ]
    set_state(kms_v1.CryptoKeyVersion.CryptoKeyVersionState.ENABLED)
    wait_condition(crds, namespace, "web", timeout=40)


def test_missing_issuer_then_created_issues_at_once(
    crds: Kube, namespace: str, make_issuer: Callable[..., dict[str, Any]]
) -> None:
    crds.apply(certificate_manifest("web", namespace, "late"))
    failed = wait_condition(crds, namespace, "web", status="False", reason="IssuerNotFound")
    assert (
        f"Issuer 'late' not found in namespace '{namespace}'"
        in condition(failed, "Ready")["message"]
    )
    started = time.monotonic()
    make_issuer("late")
    wait_condition(crds, namespace, "web", timeout=20)
    assert time.monotonic() - started < 10, "issuer readiness should not wait out the backoff"


def test_missing_issuer_backs_off_with_one_event_series_and_wakes_on_creation(
    crds: Kube, namespace: str, make_issuer: Callable[..., dict[str, Any]]
) -> None:
    """Thirty seconds without its Issuer cost a Certificate five attempts (2 s doubling:
    at 0, 2, 6, 14 and 30 s), one Event whose count grows, and no wait once it appears."""
    created = time.monotonic()
    crds.apply(certificate_manifest("web", namespace, "later"))

    def attempts(count: int) -> dict[str, Any] | None:
        obj = get_certificate(crds, namespace, "web")
        done = (obj.get("status") or {}).get("failedIssuanceAttempts", 0) >= count
        return obj if done else None

    fifth = eventually(lambda: attempts(5), timeout=90, what="fifth attempt")
    assert time.monotonic() - created >= 28, "attempts came faster than the backoff allows"
    assert fifth["status"]["failedIssuanceAttempts"] == 5
    assert condition(fifth, "Ready")["reason"] == "IssuerNotFound"

    def series() -> Any:
        events = crds.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=web"
        ).items
        found = [e for e in events if e.reason == "IssuerNotFound"]
        return found if found and sum(e.count for e in found) >= 5 else None

    (event,) = eventually(series, timeout=30, what="five IssuerNotFound occurrences")
    assert event.count == 5
    make_issuer("later")
    issuer_ready = time.monotonic()
    wait_condition(crds, namespace, "web", timeout=30)
    assert time.monotonic() - issuer_ready < 5, "the Issuer's readiness must wake it at once"


def test_issuer_with_garbage_ca_chain_is_not_ready(
    crds: Kube, namespace: str, kms_key_factory: Callable[..., str]
) -> None:
    crds.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "chain"},
            "stringData": {"ca.crt": "-----BEGIN CERTIFICATE-----\ngarbage\n"},
        },
    )
    crds.apply(
        issuer_manifest(
            "bad",
            kms_key_factory("EC_SIGN_P256_SHA256"),
            namespace=namespace,
            x509={"caSecretRef": {"name": "chain"}},
        )
    )

    def not_ready() -> dict[str, Any] | None:
        obj = crds.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", "bad")
        ready = condition(obj, "Ready")
        return ready if ready.get("reason") == "CASecretInvalid" else None

    ready = eventually(not_ready, what="CASecretInvalid")
    assert f"CA Secret {namespace}/chain" in ready["message"]
    assert "BEGIN" not in ready["message"]


def test_two_certificates_naming_one_secret(
    crds: Kube, namespace: str, issuer: dict[str, Any], kms_counters: Counters
) -> None:
    crds.apply(certificate_manifest("first", namespace, "ca", secretName="shared"))
    first = wait_condition(crds, namespace, "first")
    signs = signatures(kms_counters, issuer)
    crds.apply(certificate_manifest("second", namespace, "ca", secretName="shared"))
    refused = wait_condition(crds, namespace, "second", status="False", reason="SecretInUse")
    assert "belongs to Certificate 'first'" in condition(refused, "Ready")["message"]
    time.sleep(3)  # no issuance loop: nothing signs, nothing changes
    assert signatures(kms_counters, issuer) == signs
    assert (
        get_certificate(crds, namespace, "first")["status"]["serialNumber"]
        == first["status"]["serialNumber"]
    )
    assert (
        get_certificate(crds, namespace, "second")["metadata"]["resourceVersion"]
        == refused["metadata"]["resourceVersion"]
    )
    # once the owner goes away (and its Secret with it), the second one takes over
    crds.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "certificates", "first")
    wait_condition(crds, namespace, "second", timeout=40)


def test_unrelated_secret_is_never_overwritten(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    crds.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "precious"}, "stringData": {"password": "hunter2"}}
    )
    crds.apply(certificate_manifest("web", namespace, "ca", secretName="precious"))
    refused = wait_condition(crds, namespace, "web", status="False", reason="SecretNotManaged")
    assert "was not created by Signet" in condition(refused, "Ready")["message"]
    secret = crds.core.read_namespaced_secret("precious", namespace)
    assert secret.data == {"password": "aHVudGVyMg=="}
    assert not (secret.metadata.annotations or {})

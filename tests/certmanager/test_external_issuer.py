"""Signet as a cert-manager external issuer, on the real apiserver with cert-manager's own
CRDs: requests are created and approved the way cert-manager creates and approves them,
signed through the KMS emulator, and judged by OpenSSL, the KMS signature count and the
audit trail."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signet.kms.emulator import Counters
from tests.certmanager.conftest import installed
from tests.certmanager.requests import (
    condition,
    create_certificate,
    create_request,
    decoded,
    get_request,
    verdict,
    wait_ready,
)
from tests.kube import Kube, eventually
from tests.operator.harness import (
    OperatorProcess,
    issuer_manifest,
    signatures,
)
from tests.podcerts.csrs import generate_key, pkcs10

pytestmark = pytest.mark.cluster

PURPOSE = "cert-manager-certificate-request"


def _audit(operator: OperatorProcess, kind: str, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in operator.audit_all()
        if r.get("kind") == kind and (r.get("certificateRequest") or {}).get("name") == name
    ]


def _openssl_verify(folder: Path, chain_pem: str, ca_pem: str) -> None:
    (folder / "chain.pem").write_text(chain_pem)
    (folder / "ca.pem").write_text(ca_pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
         "-CAfile", str(folder / "ca.pem"), str(folder / "chain.pem")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_cert_manager_the_operator_says_so_and_serves_the_rest(
    crds: Kube,
    signet_operator: OperatorProcess,
    make_issuer: Callable[..., dict[str, Any]],
) -> None:
    """Runs before the module installs the CRDs: the session's operator started without
    them, said so, and works."""
    if installed(crds):
        pytest.skip("this cluster has cert-manager's CRDs")
    make_issuer()  # Ready: the operator is up and serving Signet's own kinds
    signet_operator.check_alive()
    eventually(
        lambda: (
            "cert-manager CRDs not installed" in signet_operator.log.read_text(errors="replace")
        ),
        what="the operator's word that cert-manager is not installed",
    )


def test_an_approved_request_is_issued_once_and_an_unapproved_one_is_left_alone(
    cert_manager: Kube,
    namespace: str,
    fresh_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
    kms_counters: Counters,
    tmp_path: Path,
) -> None:
    kube = cert_manager
    issuer = fresh_issuer("ca", trustDomain="cm.test")
    ca_pem = issuer["status"]["caCertificate"]
    before = signatures(kms_counters, issuer)
    owner = create_certificate(kube, namespace, "web", "ca")
    svid = f"spiffe://cm.test/ns/{namespace}/sa/web"

    # Not approved: left alone whatever happens around it (cert-manager's contract).
    waiting = pkcs10(generate_key(), dns_names=[f"db.{namespace}.svc"])
    create_request(kube, namespace, "web-waiting", waiting, owner=owner)
    key = generate_key()
    request = pkcs10(key, common_name=f"web.{namespace}.svc",
                     dns_names=[f"web.{namespace}.svc"], uris=[svid])  # fmt: skip
    created = create_request(
        kube, namespace, "web-1", request, owner=owner, duration="2h0m0s",
        usages=["digital signature", "key encipherment", "server auth", "client auth"],
    )  # fmt: skip
    verdict(kube, namespace, "web-1")
    body = wait_ready(kube, namespace, "web-1", "Issued")

    ready = condition(body)
    assert ready["status"] == "True" and ready["lastTransitionTime"], ready
    assert condition(body, "Approved")["status"] == "True"  # the approver's stays
    assert "failureTime" not in body["status"]
    chain_pem = decoded(body, "certificate")
    assert decoded(body, "ca") == ca_pem
    _openssl_verify(tmp_path, chain_pem, ca_pem)
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"web.{namespace}.svc"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [svid]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(hours=2), lifetime  # spec.duration

    # One signature, audited naming the request and the Certificate it was made for.
    assert signatures(kms_counters, issuer) - before == 1
    (record,) = _audit(signet_operator, "signet.dev/signature", "web-1")
    assert record["purpose"] == PURPOSE
    assert record["certificateRequest"] == {
        "namespace": namespace, "name": "web-1", "uid": created["metadata"]["uid"],
    }  # fmt: skip
    assert record["certManagerCertificate"] == {
        "namespace": namespace, "name": "web", "uid": owner["metadata"]["uid"],
    }  # fmt: skip
    assert record["serialNumber"] == format(leaf.serial_number, "x")
    (delivery,) = eventually(
        lambda: _audit(signet_operator, "signet.dev/delivery", "web-1"),
        what="delivery record of web-1",
    )
    assert delivery["outcome"] == "written"

    untouched = get_request(kube, namespace, "web-waiting")
    assert not (untouched.get("status") or {}).get("certificate")
    assert condition(untouched) == {}
    assert _audit(signet_operator, "signet.dev/signature", "web-waiting") == []

    # Approved while no operator runs; a restart answers it, and signs nothing answered.
    signet_operator.stop()
    verdict(kube, namespace, "web-waiting")
    signet_operator.start()
    assert decoded(wait_ready(kube, namespace, "web-waiting", "Issued"), "certificate")
    late = pkcs10(generate_key(), dns_names=[f"api.{namespace}.svc"])
    create_request(kube, namespace, "web-2", late, owner=owner)
    verdict(kube, namespace, "web-2")
    wait_ready(kube, namespace, "web-2", "Issued")
    assert signatures(kms_counters, issuer) - before == 3
    assert decoded(get_request(kube, namespace, "web-1"), "certificate") == chain_pem
    for name in ("web-1", "web-waiting", "web-2"):
        assert len(_audit(signet_operator, "signet.dev/signature", name)) == 1, name


def test_denied_and_refused_requests_fail_with_failure_time_and_no_signature(
    cert_manager: Kube,
    namespace: str,
    fresh_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
    kms_counters: Counters,
) -> None:
    kube = cert_manager
    issuer = fresh_issuer("ca", policy={"maxDuration": "720h"})
    before = signatures(kms_counters, issuer)
    web = [f"web.{namespace}.svc"]

    def ask(name: str, **spec: Any) -> str:
        names = spec.pop("names", {"dns_names": web})
        create_request(kube, namespace, name, pkcs10(generate_key(), **names), **spec)
        return name

    cases = {
        ask("other-names", names={"dns_names": ["web.billing.svc"]}): (
            "DNSNameNotAllowed",
            "spec.request dNSName[0] 'web.billing.svc' is not allowed",
        ),
        ask("too-long", duration="2160h0m0s"): (
            "DurationTooLong", "spec.duration 2160h exceeds policy.maxDuration 720h",
        ),
        ask("a-ca", isCA=True): ("InvalidRequest", "spec.isCA is true"),
        ask("other-svid", names={"uris": ["spiffe://cluster.local/ns/billing/sa/web"]}): (
            "SPIFFEIDNotAllowed", "spec.request URI[0]",
        ),
        ask("ca-usage", usages=["digital signature", "cert sign"]): (
            "UsageNotAllowed", "spec.usages[1] 'cert sign' is not allowed",
        ),
    }  # fmt: skip
    denied = ask("denied")
    foreign = ask("foreign", group="cert-manager.io")  # cert-manager's own CA issuer's
    for name in [*cases, foreign]:
        verdict(kube, namespace, name)
    verdict(kube, namespace, denied, "Denied")

    for name, (reason, text) in cases.items():
        body = wait_ready(kube, namespace, name, "Failed")
        ready = condition(body)
        assert ready["status"] == "False", ready
        assert ready["message"].startswith(f"{reason}: "), ready
        assert text in ready["message"], ready
        assert body["status"]["failureTime"], body["status"]
        assert not body["status"].get("certificate")
    body = wait_ready(kube, namespace, denied, "Denied")
    assert condition(body)["status"] == "False" and body["status"]["failureTime"]
    assert condition(body, "Denied")["status"] == "True"

    assert signatures(kms_counters, issuer) == before
    for name in [*cases, denied]:
        assert _audit(signet_operator, "signet.dev/signature", name) == []
    assert condition(get_request(kube, namespace, foreign)) == {}


def test_a_request_waits_pending_for_its_issuer_and_is_issued_once_it_is_ready(
    cert_manager: Kube,
    namespace: str,
    fresh_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
) -> None:
    kube = cert_manager
    web = [f"web.{namespace}.svc"]
    # An issuer that cannot become ready (its KMS key does not exist).
    broken = "projects/signet-test/locations/global/keyRings/none/cryptoKeys/k/cryptoKeyVersions/1"
    kube.apply(issuer_manifest("broken", broken, namespace=namespace))
    create_request(kube, namespace, "on-broken", pkcs10(generate_key(), dns_names=web),
                   issuer="broken")  # fmt: skip
    create_request(kube, namespace, "on-late", pkcs10(generate_key(), dns_names=web),
                   issuer="late")  # fmt: skip
    verdict(kube, namespace, "on-broken")
    verdict(kube, namespace, "on-late")

    body = wait_ready(kube, namespace, "on-broken", "Pending")
    assert condition(body)["status"] == "False"
    assert condition(body)["message"].startswith("IssuerNotReady: ")
    body = wait_ready(kube, namespace, "on-late", "Pending")
    assert condition(body)["message"].startswith("IssuerNotFound: "), condition(body)
    assert "'late' does not exist" in condition(body)["message"]
    assert "failureTime" not in body["status"]

    fresh_issuer("late")  # its readiness wakes the request, not its backoff
    body = wait_ready(kube, namespace, "on-late", "Issued", timeout=30)
    assert decoded(body, "certificate")
    assert condition(get_request(kube, namespace, "on-broken"))["reason"] == "Pending"

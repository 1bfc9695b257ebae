"""Signet signs Kubernetes CertificateSigningRequests on the real apiserver.

Requests are created as their requesters (a ServiceAccount, a user), approved by the test
admin through the /approval subresource, signed through the KMS emulator, and judged by
the apiserver's own status validation and signer authorization, OpenSSL and the audit
trail.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from signet.kms.emulator import Counters
from tests.kube import Kube, eventually
from tests.operator.harness import (
    OperatorProcess,
    signatures,
)
from tests.podcerts.csrs import (
    approve,
    certificate,
    create_csr,
    failed,
    generate_key,
    get_csr,
    pkcs10,
    service_account,
    wait_answered,
)

pytestmark = pytest.mark.cluster

OPTED_IN = {"certificateSigningRequests": {"enabled": True}}
PURPOSE = "certificate-signing-request"


def _csr_audit(operator: OperatorProcess, kind: str, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in operator.audit_all()
        if r.get("kind") == kind and (r.get("certificateSigningRequest") or {}).get("name") == name
    ]


def _openssl_verify(folder: Path, chain_pem: str, ca_pem: str) -> None:
    (folder / "chain.pem").write_text(chain_pem)
    (folder / "ca.pem").write_text(ca_pem)
    for purpose in ("sslclient", "sslserver"):
        result = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose,
             "-CAfile", str(folder / "ca.pem"), str(folder / "chain.pem")],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def _spki(key: Any) -> bytes:
    return key.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_an_approved_request_is_signed_once_and_a_restart_signs_nothing_again(
    crds: Kube,
    namespace: str,
    fresh_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
    kms_counters: Counters,
    csr_requesters: str,
    csr_names: list[str],
    tmp_path: Path,
) -> None:
    issuer = fresh_issuer("ca", trustDomain="csr.test", **OPTED_IN)
    ca_pem = issuer["status"]["caCertificate"]
    signer = f"issuers.signet.dev/{namespace}.ca"
    user, groups = service_account(namespace, "web")
    svid = f"spiffe://csr.test/ns/{namespace}/sa/web"
    before = signatures(kms_counters, issuer)

    # Not approved: Signet leaves it alone, whatever happens around it.
    waiting_key = generate_key()
    waiting = create_csr(
        crds, signer, pkcs10(waiting_key, dns_names=[f"db.{namespace}.svc"]), user=user,
        groups=groups,
    )  # fmt: skip
    csr_names.append(waiting)

    key = generate_key()
    request = pkcs10(key, common_name=f"web.{namespace}.svc",
                     dns_names=[f"web.{namespace}.svc"], uris=[svid])  # fmt: skip
    name = create_csr(crds, signer, request, user=user, groups=groups, expiration_seconds=3600)
    csr_names.append(name)
    approve(crds, name)
    body = wait_answered(crds, name)
    assert failed(body) is None, failed(body)
    chain_pem = certificate(body)
    _openssl_verify(tmp_path, chain_pem, ca_pem)
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    assert _spki(leaf.public_key()) == _spki(key.public_key())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"web.{namespace}.svc"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [svid]
    assert leaf.subject.rfc4514_string() == f"CN=web.{namespace}.svc"
    ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(hours=1), lifetime  # spec.expirationSeconds
    assert [c["type"] for c in body["status"]["conditions"]] == ["Approved"]

    # One signature, audited with the request and who asked, and one delivery record.
    assert signatures(kms_counters, issuer) - before == 1
    (record,) = _csr_audit(signet_operator, "signet.dev/signature", name)
    assert record["purpose"] == PURPOSE
    assert record["requester"]["username"] == user
    assert set(groups) <= set(record["requester"]["groups"])
    assert record["serviceAccount"] == {"namespace": namespace, "name": "web"}
    assert record["serialNumber"] == format(leaf.serial_number, "x")
    assert record["dnsNames"] == [f"web.{namespace}.svc"] and record["spiffeID"] == svid
    (delivery,) = eventually(
        lambda: _csr_audit(signet_operator, "signet.dev/delivery", name),
        what=f"delivery record of {name}",
    )
    assert delivery["outcome"] == "written"
    assert delivery["serialNumber"] == record["serialNumber"]

    # The unapproved request saw all of that and is untouched.
    untouched = get_csr(crds, waiting)
    assert not certificate(untouched) and failed(untouched) is None
    assert _csr_audit(signet_operator, "signet.dev/signature", waiting) == []

    # A restart looks at every request again and signs nothing that is answered; approval
    # still counts when it comes later.
    signet_operator.stop()
    signet_operator.start()
    late = create_csr(crds, signer, pkcs10(generate_key(), dns_names=[f"api.{namespace}.svc"]),
                      user=user, groups=groups)  # fmt: skip
    csr_names.append(late)
    approve(crds, late)
    assert certificate(wait_answered(crds, late))
    assert signatures(kms_counters, issuer) - before == 2
    assert certificate(get_csr(crds, name)) == chain_pem
    assert not certificate(get_csr(crds, waiting))
    approve(crds, waiting)
    signed = wait_answered(crds, waiting)
    leaf = x509.load_pem_x509_certificates(certificate(signed).encode())[0]
    assert _spki(leaf.public_key()) == _spki(waiting_key.public_key())
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == datetime.timedelta(hours=24)
    assert signatures(kms_counters, issuer) - before == 3
    assert len(_csr_audit(signet_operator, "signet.dev/signature", name)) == 1


def test_refusals_fail_with_the_rule_that_refused(
    crds: Kube,
    namespace: str,
    other_namespace: str,
    fresh_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
    kms_counters: Counters,
    csr_requesters: str,
    csr_names: list[str],
) -> None:
    issuer = fresh_issuer(
        "ca", certificateSigningRequests={"enabled": True, "allowedUsers": ["carol"]}
    )
    plain = fresh_issuer("plain")
    before = {i["metadata"]["name"]: signatures(kms_counters, i) for i in (issuer, plain)}
    signer = f"issuers.signet.dev/{namespace}.ca"
    web, web_groups = service_account(namespace, "web")
    stranger, stranger_groups = service_account(other_namespace, "web")

    def ask(signer: str, user: str, groups: list[str], **names: Any) -> str:
        usages = names.pop("usages", None)
        name = create_csr(
            crds, signer, pkcs10(generate_key(), **names), user=user, groups=groups, usages=usages
        )
        csr_names.append(name)
        return name

    cases = {
        ask(signer, web, web_groups, dns_names=[f"web.{namespace}.svc", "web.billing.svc"]): (
            "DNSNameNotAllowed",
            "spec.request dNSName[1] 'web.billing.svc' is not allowed: it matches none of "
            "policy.allowedDNSNames",
        ),
        ask(signer, web, web_groups, uris=[f"spiffe://cluster.local/ns/{namespace}/sa/db"]): (
            "SPIFFEIDNotAllowed",
            f"its requester's own, 'spiffe://cluster.local/ns/{namespace}/sa/web'",
        ),
        ask(signer, web, web_groups, dns_names=[f"web.{namespace}.svc"],
            usages=["digital signature", "code signing"]): (
            "UsageNotAllowed",
            "spec.usages[1] 'code signing' is not allowed: it is not in "
            "spec.certificateSigningRequests.allowedUsages",
        ),
        ask(signer, "alice", ["devs"], dns_names=[f"web.{namespace}.svc"]): (
            "RequesterNotAllowed",
            "spec.username 'alice'",
        ),
        ask(signer, stranger, stranger_groups, dns_names=[f"web.{other_namespace}.svc"]): (
            "NamespaceNotAllowed",
            f"signs only for ServiceAccounts of namespace '{namespace}'",
        ),
        ask(f"issuers.signet.dev/{namespace}.plain", web, web_groups,
            dns_names=[f"web.{namespace}.svc"]): (
            "CertificateSigningRequestsNotEnabled",
            "spec.certificateSigningRequests.enabled",
        ),
        ask(f"issuers.signet.dev/{namespace}.missing", web, web_groups,
            dns_names=[f"web.{namespace}.svc"]): ("UnknownSigner", "does not exist"),
    }  # fmt: skip
    # A named user is signed for, within the Issuer's namespace's policy.
    carol = ask(signer, "carol", [], dns_names=[f"carol.{namespace}.svc"])
    # Another signer's request is none of Signet's business, approved or not.
    foreign = ask("example.com/other", web, web_groups, dns_names=[f"web.{namespace}.svc"])
    for name in [*cases, carol, foreign]:
        approve(crds, name)

    for name, (reason, text) in cases.items():
        condition = failed(wait_answered(crds, name))
        assert condition is not None, name
        assert (condition["status"], condition["reason"]) == ("True", reason), condition
        assert text in condition["message"], condition
    body = wait_answered(crds, carol)
    assert failed(body) is None, failed(body)
    leaf = x509.load_pem_x509_certificates(certificate(body).encode())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"carol.{namespace}.svc"]
    (record,) = _csr_audit(signet_operator, "signet.dev/signature", carol)
    assert record["requester"]["username"] == "carol" and "serviceAccount" not in record

    assert signatures(kms_counters, issuer) - before["ca"] == 1
    assert signatures(kms_counters, plain) == before["plain"]
    for name in cases:
        assert _csr_audit(signet_operator, "signet.dev/signature", name) == []
    untouched = get_csr(crds, foreign)
    assert not certificate(untouched) and failed(untouched) is None

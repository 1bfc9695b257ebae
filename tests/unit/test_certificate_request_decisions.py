"""What Signet answers a cert-manager CertificateRequest, as table rows: the pure decision
and the request's phase, no cluster."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from signet.api.certificate import DEFAULT_USAGES
from signet.api.issuer import parse_issuer_spec
from signet.decisions import certificaterequest as cr
from signet.reasons import Reason
from tests.unit.test_csr_decisions import KEY, NS, Facts, issuer, pkcs10

OWN_SVID = f"spiffe://cluster.local/ns/{NS}/sa/web"


def body(
    *,
    kind: str | None = "Issuer",
    group: str = "signet.dev",
    pem: bytes | None = None,
    conditions: tuple[tuple[str, str], ...] = (("Approved", "True"),),
    **spec: Any,
) -> dict[str, Any]:
    issuer_ref = {"name": "ca", "group": group, **({"kind": kind} if kind else {})}
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {
            "namespace": NS,
            "name": "web-1",
            "uid": "uid-1",
            "annotations": {"cert-manager.io/certificate-name": "web"},
        },
        "spec": {
            "issuerRef": issuer_ref,
            "request": base64.b64encode(pkcs10() if pem is None else pem).decode(),
            **spec,
        },
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions]},
    }


def decide(
    raw: dict[str, Any], facts: Facts | None, labels: dict[str, str] | None = None, **kw: Any
) -> cr.CertificateRequestDecision:
    request = cr.parse_request(raw)
    return cr.decide(request, facts, namespace_labels={} if labels is None else labels, **kw)


CASES: list[tuple[str, dict[str, Any], Facts | None, cr.Action, Reason, str]] = [
    ("a name the namespace's policy grants", body(), issuer(),
     cr.Action.SIGN, Reason.ISSUED, f"web.{NS}.svc"),
    ("the namespace's own SPIFFE ID, as a Certificate's spiffe.serviceAccount",
     body(pem=pkcs10(dns=(), uris=(OWN_SVID,))), issuer(),
     cr.Action.SIGN, Reason.ISSUED, OWN_SVID),
    ("another namespace's SPIFFE ID",
     body(pem=pkcs10(dns=(), uris=("spiffe://cluster.local/ns/billing/sa/web",))), issuer(),
     cr.Action.FAIL, Reason.SPIFFE_ID_NOT_ALLOWED, "spec.request URI[0]"),
    ("a SPIFFE ID and another URI", body(pem=pkcs10(dns=(), uris=(OWN_SVID, "https://x"))),
     issuer(), cr.Action.FAIL, Reason.INVALID_REQUEST, "exactly one URI SAN"),
    ("a name outside the namespace's policy",
     body(pem=pkcs10(dns=(f"web.{NS}.svc", "web.billing.svc"))), issuer(),
     cr.Action.FAIL, Reason.DNS_NAME_NOT_ALLOWED,
     "spec.request dNSName[1] 'web.billing.svc' is not allowed: it matches none of "
     "policy.allowedDNSNames"),
    ("a usage no Certificate may have", body(usages=["digital signature", "cert sign"]),
     issuer(), cr.Action.FAIL, Reason.USAGE_NOT_ALLOWED, "spec.usages[1] 'cert sign'"),
    ("a SPIFFE ID with only one of the mTLS usages",
     body(pem=pkcs10(dns=(), uris=(OWN_SVID,)), usages=["digital signature", "server auth"]),
     issuer(), cr.Action.FAIL, Reason.INVALID_REQUEST, "must include both"),
    ("a duration over policy.maxDuration", body(duration="2160h0m0s"),
     issuer(policy={"maxDuration": "720h"}), cr.Action.FAIL, Reason.DURATION_TOO_LONG,
     "spec.duration 2160h exceeds policy.maxDuration 720h"),
    ("a duration that is no duration", body(duration="ninety days"), issuer(),
     cr.Action.FAIL, Reason.INVALID_DURATION, "spec.duration"),
    ("a duration below a Certificate's minimum", body(duration="30s"), issuer(),
     cr.Action.FAIL, Reason.INVALID_DURATION, "spec.duration 30s is not between 1m"),
    ("a key algorithm the policy does not allow", body(pem=pkcs10(key_kind="RSA")),
     issuer(policy={"allowedKeyAlgorithms": ["ECDSA"]}), cr.Action.FAIL,
     Reason.KEY_ALGORITHM_NOT_ALLOWED, "spec.request public key algorithm 'RSA'"),
    ("a key too weak to certify", body(pem=pkcs10(key_kind="RSA1024")), issuer(),
     cr.Action.FAIL, Reason.UNSUPPORTED_KEY_ALGORITHM, "spec.request public key"),
    ("a request whose signature does not verify", body(pem=pkcs10(tamper=True)), issuer(),
     cr.Action.FAIL, Reason.INVALID_REQUEST, "does not verify"),
    ("a CA certificate", body(isCA=True), issuer(),
     cr.Action.FAIL, Reason.INVALID_REQUEST, "spec.isCA is true"),
    ("an issuer kind Signet has not", body(kind="Vault"), None,
     cr.Action.FAIL, Reason.INVALID_ISSUER_REF, "spec.issuerRef.kind 'Vault'"),
    ("an issuer not ready yet: Pending", body(), issuer(ready=False),
     cr.Action.WAIT, Reason.ISSUER_NOT_READY, "down"),
    ("a ClusterIssuer whose namespaceSelector leaves the namespace out",
     body(kind="ClusterIssuer"),
     issuer("ClusterIssuer", namespaceSelector={"matchLabels": {"team": "a"}}),
     cr.Action.FAIL, Reason.NAMESPACE_NOT_ALLOWED, NS),
    ("an SSH-only issuer", body(), Facts(True, "KeyReady", "", parse_issuer_spec(
         "Issuer", "ca", NS, {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}})),
     cr.Action.FAIL, Reason.X509_NOT_ENABLED, "does not issue X.509"),
    ("denied by an approver: not read at all", body(conditions=(("Denied", "True"),)), None,
     cr.Action.DENY, Reason.REQUEST_DENIED, "denied by an approver"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "facts", "action", "reason", "says"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_a_certificate_request_is_judged_as_a_certificate_of_its_namespace(
    raw: dict[str, Any], facts: Facts | None, action: cr.Action, reason: Reason, says: str
) -> None:
    decision = decide(raw, facts)
    assert (decision.action, decision.reason) == (action, reason), decision.message
    assert says in decision.message


def test_an_issuer_the_api_says_is_absent_keeps_the_request_pending() -> None:
    decision = decide(body(), None, issuer_absent=True)
    assert (decision.action, decision.reason) == (cr.Action.WAIT, Reason.ISSUER_NOT_FOUND)
    assert f"Issuer 'ca' does not exist in namespace '{NS}'" in decision.message


def test_without_usages_or_duration_it_gets_what_a_certificate_without_them_gets() -> None:
    decision = decide(body(), issuer())
    assert decision.plan is not None
    assert decision.plan.leaf.usages == DEFAULT_USAGES
    assert decision.plan.lifetime == cr.DEFAULT_DURATION
    assert decision.plan.key_algorithm == "ECDSA"


def test_a_granted_spiffe_id_is_the_leaf_s_and_not_a_plain_uri() -> None:
    decision = decide(body(pem=pkcs10(dns=(), uris=(OWN_SVID,))), issuer())
    assert decision.plan is not None
    assert (decision.plan.leaf.spiffe_id, decision.plan.leaf.uris) == (OWN_SVID, ())


@pytest.mark.parametrize(
    ("conditions", "status", "phase"),
    [
        ((), {}, cr.Phase.PENDING),
        ((("Approved", "True"),), {}, cr.Phase.APPROVED),
        ((("Approved", "False"),), {}, cr.Phase.PENDING),
        ((("Denied", "True"),), {}, cr.Phase.DENIED),
        ((("Approved", "True"),), {"certificate": "eA=="}, cr.Phase.DONE),
        ((("Denied", "True"),), {"failureTime": "2026-01-01T00:00:00Z"}, cr.Phase.DONE),
        ((("Approved", "True"), ("Ready", "False")), {}, cr.Phase.APPROVED),
    ],
)
def test_the_phase_follows_cert_manager_s_contract(
    conditions: tuple[tuple[str, str], ...], status: dict[str, Any], phase: cr.Phase
) -> None:
    raw = body(conditions=conditions)
    raw["status"].update(status)
    assert cr.phase(raw) is phase


@pytest.mark.parametrize("reason", ["Issued", "Failed", "Denied"])
def test_a_final_ready_reason_ends_the_request(reason: str) -> None:
    raw = body()
    raw["status"]["conditions"].append({"type": "Ready", "status": "False", "reason": reason})
    assert cr.phase(raw) is cr.Phase.DONE


def test_only_requests_for_signet_issuers_are_ours() -> None:
    assert cr.is_ours(body())
    assert not cr.is_ours(body(group="cert-manager.io"))
    assert not cr.is_ours({"spec": {"issuerRef": {"name": "ca"}}})


def test_the_owning_certificate_is_read_from_the_owner_reference_first() -> None:
    metadata = {
        "annotations": {"cert-manager.io/certificate-name": "by-annotation"},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Certificate", "name": "not-cert-manager", "uid": "x"},
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "web", "uid": "u"},
        ],
    }
    assert cr.owner_certificate(metadata) == ("web", "u")
    assert cr.owner_certificate({"annotations": metadata["annotations"]}) == (
        "by-annotation",
        "",
    )
    assert cr.owner_certificate({}) is None

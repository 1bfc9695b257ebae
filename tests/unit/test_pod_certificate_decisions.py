"""What Signet answers a PodCertificateRequest, as table rows: the pure decision, no cluster."""

from __future__ import annotations

import base64
import datetime
import functools
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from signet.api.issuer import IssuerSpec, parse_issuer_spec
from signet.decisions import podcertificate as pc
from signet.reasons import Reason

NS = "shop"
KEY = "projects/proj-123/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
ENABLED = {"podCertificates": {"enabled": True}}
DNS_OK = {"podCertificates": {"enabled": True, "dnsNamesFromUserAnnotations": True}}
DNS = "signet.dev/dns-names"


@dataclass(frozen=True)
class Facts:
    ready: bool
    reason: str
    message: str
    spec: IssuerSpec | None


@functools.cache
def key(kind: str) -> PrivateKeyTypes:
    if kind == "RSA3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"ECDSAP256": ec.SECP256R1, "ECDSAP384": ec.SECP384R1, "ECDSAP521": ec.SECP521R1}
    return ec.generate_private_key(curve[kind]())


def stub(kind: str) -> bytes:
    private = key(kind)
    digest = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return csr.sign(private, digest).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def request(
    signer: str = f"issuers.signet.dev/{NS}.ca",
    key_type: str = "ECDSAP256",
    *,
    max_seconds: int = 86400,
    annotations: dict[str, str] | None = None,
    age: datetime.timedelta = datetime.timedelta(seconds=5),
) -> pc.PodRequest:
    return pc.PodRequest(
        namespace=NS,
        name="req-1",
        uid="uid-1",
        signer_name=signer,
        pod_name="web-0",
        pod_uid="pod-uid",
        service_account_name="web",
        service_account_uid="sa-uid",
        node_name="n1",
        node_uid="node-uid",
        max_expiration=datetime.timedelta(seconds=max_seconds),
        stub_pkcs10=stub(key_type),
        user_annotations=annotations or {},
        created=NOW - age,
    )


def issuer(kind: str = "Issuer", ready: bool = True, **spec: Any) -> Facts:
    raw = {"kms": {"cloudKMS": {"keyVersion": KEY}}, "x509": {"selfSigned": {}}, **spec}
    parsed = parse_issuer_spec(kind, "ca", NS if kind == "Issuer" else None, raw)
    return Facts(ready, "KeyReady" if ready else "KMSUnavailable", "kms down", parsed)


CLUSTER = "clusterissuers.signet.dev/ca"
ROWS: list[tuple[str, pc.PodRequest, Facts | None, dict[str, Any], pc.Action, Reason, str]] = [
    ("malformed signer", request(f"issuers.signet.dev/{NS}"), None, {},
     pc.Action.DENY, Reason.UNKNOWN_SIGNER, "names no issuer"),
    ("issuer confirmed absent", request(), None, {"issuer_absent": True},
     pc.Action.DENY, Reason.UNKNOWN_SIGNER, "does not exist in namespace 'shop'"),
    ("issuer not seen yet", request(), None, {},
     pc.Action.WAIT, Reason.ISSUER_NOT_FOUND, "not found"),
    ("issuer not ready", request(), issuer(ready=False, **ENABLED), {},
     pc.Action.WAIT, Reason.ISSUER_NOT_READY, "kms down"),
    ("issuer not ready for an hour: still waits (Failed is final for the kubelet)",
     request(age=datetime.timedelta(hours=1)),
     issuer(ready=False, **ENABLED), {},
     pc.Action.WAIT, Reason.ISSUER_NOT_READY, "kms down"),
    ("Issuer of another namespace", request("issuers.signet.dev/other.ca"), None, {},
     pc.Action.DENY, Reason.NAMESPACE_NOT_ALLOWED, "signs only for pods in namespace 'other'"),
    ("ClusterIssuer selector", request(CLUSTER),
     issuer("ClusterIssuer", namespaceSelector={"matchLabels": {"a": "b"}}, **ENABLED),
     {"namespace_labels": {}}, pc.Action.DENY, Reason.NAMESPACE_NOT_ALLOWED, "namespaceSelector"),
    ("not opted in", request(), issuer(), {},
     pc.Action.DENY, Reason.POD_CERTIFICATES_NOT_ENABLED, "spec.podCertificates.enabled"),
    ("SSH-only issuer", request(),
     Facts(True, "KeyReady", "", parse_issuer_spec(
         "Issuer", "ca", NS, {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}, **ENABLED})),
     {}, pc.Action.DENY, Reason.X509_NOT_ENABLED, "does not issue X.509"),
    ("user annotations", request(annotations={"example.com/x": "y"}), issuer(**ENABLED), {},
     pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS, "'example.com/x'"),
    ("DNS names not granted to pods", request(annotations={DNS: "web.shop.svc"}),
     issuer(**ENABLED), {}, pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
     "spec.podCertificates.dnsNamesFromUserAnnotations is not true"),
    ("DNS names beside another key", request(annotations={DNS: "web.shop.svc", "x.io/y": "z"}),
     issuer(**DNS_OK), {}, pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
     "'x.io/y'"),
    ("DNS name malformed", request(annotations={DNS: "web.shop.svc, Web_1.shop.svc"}),
     issuer(**DNS_OK), {}, pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
     "item 1: DNS name 'Web_1.shop.svc' must be lowercase"),
    ("DNS name twice", request(annotations={DNS: "web.shop.svc,web.shop.svc"}),
     issuer(**DNS_OK), {}, pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
     "lists a DNS name twice"),
    ("DNS names too many", request(annotations={DNS: ",".join(f"w{i}.a.svc" for i in range(17))}),
     issuer(**DNS_OK), {}, pc.Action.DENY, Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
     "lists 17 DNS names; at most 16"),
    ("DNS name of another namespace", request(annotations={DNS: "web.shop.svc,db.bank.svc"}),
     issuer(**DNS_OK), {}, pc.Action.DENY, Reason.DNS_NAME_NOT_ALLOWED,
     "[1] 'db.bank.svc' is not allowed: it matches none of policy.allowedDNSNames"),
    ("wildcard DNS name", request(annotations={DNS: "*.web.shop.svc"}),
     issuer(policy={"allowedDNSNames": ["*.*.{namespace}.svc"]}, **DNS_OK), {},
     pc.Action.DENY, Reason.WILDCARD_NOT_ALLOWED, "policy.allowWildcards is false"),
    ("DNS names granted", request(annotations={DNS: "web.shop.svc, api.shop.svc"}),
     issuer(**DNS_OK), {}, pc.Action.SIGN, Reason.ISSUED, "spiffe://cluster.local/ns/shop/sa/web"),
    ("key type not allowed", request(key_type="RSA3072"),
     issuer(podCertificates={"enabled": True, "allowedKeyTypes": ["ECDSAP256", "ED25519"]}), {},
     pc.Action.DENY, Reason.UNSUPPORTED_KEY_TYPE, "use ECDSAP256 or ED25519"),
    ("policy key algorithms", request(key_type="ED25519"),
     issuer(policy={"allowedKeyAlgorithms": ["ECDSA"]}, **ENABLED), {},
     pc.Action.DENY, Reason.UNSUPPORTED_KEY_TYPE, "policy.allowedKeyAlgorithms"),
    ("policy URIs", request(),
     issuer(policy={"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/db"]}, **ENABLED),
     {}, pc.Action.DENY, Reason.URI_NOT_ALLOWED, "policy.allowedURIs"),
    ("policy maxDuration under an hour", request(),
     issuer(policy={"maxDuration": "30m"}, **ENABLED), {},
     pc.Action.DENY, Reason.INVALID_DURATION, "policy.maxDuration of Issuer/shop/ca is 30m"),
    ("ClusterIssuer that serves the namespace", request(CLUSTER),
     issuer("ClusterIssuer", namespaceSelector={"matchLabels": {"a": "b"}}, **ENABLED),
     {"namespace_labels": {"a": "b"}}, pc.Action.SIGN, Reason.ISSUED, "spiffe://cluster.local/ns/shop/sa/web"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "facts", "extra", "action", "reason", "text"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decision(
    request_: pc.PodRequest,
    facts: Facts | None,
    extra: dict[str, Any],
    action: pc.Action,
    reason: Reason,
    text: str,
) -> None:
    decision = pc.decide(
        request_,
        facts,
        namespace_labels=extra.get("namespace_labels"),
        now=NOW,
        issuer_absent=extra.get("issuer_absent", False),
    )
    assert (decision.action, decision.reason) == (action, reason), decision.message
    assert text in decision.message
    assert (decision.plan is not None) is (action is pc.Action.SIGN)


@pytest.mark.parametrize(
    ("max_seconds", "spec", "lifetime"),
    [
        (86400, {}, datetime.timedelta(hours=24)),
        (3600, {}, datetime.timedelta(hours=1)),
        (86400, {"podCertificates": {"enabled": True, "defaultDuration": "12h"}},
         datetime.timedelta(hours=12)),
        (7862400, {"policy": {"maxDuration": "2h"}}, datetime.timedelta(hours=2)),
    ],
    ids=["issuer default", "request maximum", "issuer defaultDuration", "policy maxDuration"],
)  # fmt: skip
def test_lifetime_is_the_shortest_of_request_issuer_and_policy(
    max_seconds: int, spec: dict[str, Any], lifetime: datetime.timedelta
) -> None:
    facts = issuer(**{**ENABLED, **spec})
    decision = pc.decide(request(max_seconds=max_seconds), facts, namespace_labels=None, now=NOW)
    assert decision.plan is not None, decision.message
    assert decision.plan.lifetime == lifetime
    assert decision.plan.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"


@pytest.mark.parametrize("key_type", ["RSA3072", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519"])
def test_key_types_are_named_as_the_kubelet_names_them(key_type: str) -> None:
    decision = pc.decide(
        request(key_type=key_type), issuer(**ENABLED), namespace_labels=None, now=NOW
    )
    assert decision.plan is not None and decision.plan.key_type == key_type


@pytest.mark.parametrize("hours", [1, 24, 24 * 91])
def test_begin_refresh_at_is_stable_and_inside_the_allowed_window(hours: int) -> None:
    not_before = NOW
    not_after = NOW + datetime.timedelta(hours=hours)
    lifetime = not_after - not_before
    margin = datetime.timedelta(minutes=10)
    for uid in (f"uid-{n}" for n in range(50)):
        at = pc.begin_refresh_at(uid, not_before, not_after)
        assert at == pc.begin_refresh_at(uid, not_before, not_after)
        assert not_before + margin <= at <= not_after - margin
        assert lifetime * 0.6 <= at - not_before <= lifetime * 2 / 3


def test_signer_names_round_trip() -> None:
    for ident in (("Issuer", "shop", "ca.v2"), ("ClusterIssuer", "", "pods")):
        name = pc.signer_name(*ident)
        assert pc.is_ours(name) and pc.issuer_of(name) == ident
    assert pc.signer_name("Issuer", "shop", "ca") == "issuers.signet.dev/shop.ca"
    assert pc.signer_name("ClusterIssuer", None, "ca") == "clusterissuers.signet.dev/ca"
    assert not pc.is_ours("example.com/signer")
    assert pc.issuer_of("clusterissuers.signet.dev/") is None
    assert pc.issuer_of("clusterissuers.signet.dev/a/b") is None


def test_parse_request_and_answered() -> None:
    body = {
        "metadata": {
            "namespace": NS,
            "name": "req-1",
            "uid": "u",
            "creationTimestamp": "2026-12-01T11:59:00Z",
        },
        "spec": {
            "signerName": "issuers.signet.dev/shop.ca",
            "serviceAccountName": "web",
            "stubPKCS10Request": base64.b64encode(stub("ED25519")).decode(),
        },
    }
    parsed = pc.parse_request(body)
    assert parsed.max_expiration == datetime.timedelta(hours=24)
    assert parsed.created == NOW - datetime.timedelta(minutes=1)
    assert pc.key_type(pc.requested_key(parsed)) == "ED25519"
    # A v1beta1 kubelet's request: the key as pkixPublicKey, no stub.
    der = (
        key("ECDSAP384")
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    beta = {**body, "spec": {**body["spec"], "stubPKCS10Request": ""}}
    beta["spec"]["pkixPublicKey"] = base64.b64encode(der).decode()
    assert pc.key_type(pc.requested_key(pc.parse_request(beta))) == "ECDSAP384"
    del beta["spec"]["pkixPublicKey"]
    with pytest.raises(ValueError, match=r"carries no key.*v1beta1 served"):
        pc.requested_key(pc.parse_request(beta))
    assert not pc.answered(body)
    assert pc.answered({**body, "status": {"conditions": [{"type": "Denied"}]}})
    assert not pc.answered({**body, "status": {"conditions": [{"type": "SomethingElse"}]}})
    with pytest.raises(ValueError, match="not base64"):
        pc.parse_request({**body, "spec": {"stubPKCS10Request": "%%%"}})


@pytest.mark.parametrize(
    ("raw", "reason", "text"),
    [
        ({"enabled": "yes"}, Reason.INVALID_SPEC, "expected true or false"),
        ({"defaultDuration": "30m"}, Reason.INVALID_DURATION, "at least 1h"),
        ({"allowedKeyTypes": ["ECDSAP512"]}, Reason.INVALID_SPEC, "'ECDSAP512' is not one of"),
    ],
)
def test_pod_certificates_spec_is_validated(raw: dict[str, Any], reason: Reason, text: str) -> None:
    from signet.api import SpecError

    spec = {"kms": {"cloudKMS": {"keyVersion": KEY}}, "x509": {"selfSigned": {}}}
    with pytest.raises(SpecError) as error:
        parse_issuer_spec("Issuer", "ca", NS, {**spec, "podCertificates": raw})
    assert error.value.reason is reason and text in error.value.message


def test_pod_certificates_are_off_unless_enabled() -> None:
    assert not issuer().spec.pod_certificates.enabled  # type: ignore[union-attr]
    settings = issuer(**ENABLED).spec.pod_certificates  # type: ignore[union-attr]
    assert settings.enabled and settings.default_duration == datetime.timedelta(hours=24)
    assert settings.allowed_key_types == (
        "RSA3072", "RSA4096", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519"
    )  # fmt: skip


def test_granted_dns_names_are_in_the_plan_in_the_order_asked() -> None:
    asked = request(annotations={DNS: "web.shop.svc, api.shop.svc"})
    decision = pc.decide(asked, issuer(**DNS_OK), namespace_labels=None, now=NOW)
    assert decision.plan is not None
    assert decision.plan.dns_names == ("web.shop.svc", "api.shop.svc")

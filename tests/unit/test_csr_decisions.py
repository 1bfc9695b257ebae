"""What Signet answers an approved CertificateSigningRequest, as table rows: the pure
decision, no cluster."""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from signet.api.errors import SpecError
from signet.api.issuer import IssuerSpec, parse_issuer_spec
from signet.decisions import csr
from signet.reasons import Reason

NS = "shop"
KEY = "projects/proj-123/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
SA = f"system:serviceaccount:{NS}:web"
ISSUER_SIGNER = f"issuers.signet.dev/{NS}.ca"
CLUSTER_SIGNER = "clusterissuers.signet.dev/ca"
OWN_SVID = f"spiffe://cluster.local/ns/{NS}/sa/web"
ENABLED = {"certificateSigningRequests": {"enabled": True}}
USAGES = ("digital signature", "key encipherment", "server auth", "client auth")


@dataclass(frozen=True)
class Facts:
    ready: bool
    reason: str
    message: str
    spec: IssuerSpec | None


@functools.cache
def key(kind: str = "EC") -> PrivateKeyTypes:
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "RSA1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def pkcs10(
    *,
    dns: tuple[str, ...] = (f"web.{NS}.svc",),
    uris: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    other: tuple[x509.GeneralName, ...] = (),
    subject: tuple[x509.NameAttribute[str], ...] = (),
    key_kind: str = "EC",
    tamper: bool = False,
) -> bytes:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.RFC822Name(e) for e in emails]
    names += list(other)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(list(subject)))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    private = key(key_kind)
    digest = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    der = builder.sign(private, digest).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]
    if tamper:  # the last byte is the signature's: the request no longer verifies
        der = der[:-1] + bytes([der[-1] ^ 1])
    body = base64.encodebytes(der).decode()
    return (
        f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n".encode()
    )


def request(
    signer: str = ISSUER_SIGNER,
    *,
    username: str = SA,
    groups: tuple[str, ...] = ("system:serviceaccounts", f"system:serviceaccounts:{NS}"),
    usages: tuple[str, ...] = USAGES,
    expiration: int | None = None,
    pem: bytes | None = None,
) -> csr.CsrRequest:
    return csr.CsrRequest(
        name="csr-1",
        uid="uid-1",
        signer_name=signer,
        username=username,
        user_uid="user-uid",
        groups=groups,
        usages=usages,
        expiration=None if expiration is None else datetime.timedelta(seconds=expiration),
        pem=pkcs10() if pem is None else pem,
    )


def issuer(kind: str = "Issuer", ready: bool = True, **spec: Any) -> Facts:
    raw = {"kms": {"cloudKMS": {"keyVersion": KEY}}, "x509": {"selfSigned": {}}, **spec}
    parsed = parse_issuer_spec(kind, "ca", NS if kind == "Issuer" else None, raw)
    return Facts(ready, "Ready" if ready else "KMSUnavailable", "" if ready else "down", parsed)


def csr_settings(**settings: Any) -> dict[str, Any]:
    return {"certificateSigningRequests": {"enabled": True, **settings}}


def decide(
    req: csr.CsrRequest, facts: Facts | None, labels: dict[str, str] | None = None, **kw: Any
) -> csr.CsrDecision:
    return csr.decide(req, facts, namespace_labels=labels if labels is not None else {}, **kw)


CASES: list[tuple[str, csr.CsrRequest, Facts | None, csr.Action, Reason, str]] = [
    ("a ServiceAccount gets a name its namespace's policy grants",
     request(), issuer(**ENABLED), csr.Action.SIGN, Reason.ISSUED, f"web.{NS}.svc"),
    ("a ServiceAccount gets its own SPIFFE ID",
     request(pem=pkcs10(dns=(), uris=(OWN_SVID,))), issuer(**ENABLED),
     csr.Action.SIGN, Reason.ISSUED, OWN_SVID),
    ("another ServiceAccount's SPIFFE ID, though in the namespace, is not its own",
     request(pem=pkcs10(uris=(f"spiffe://cluster.local/ns/{NS}/sa/db",))), issuer(**ENABLED),
     csr.Action.FAIL, Reason.SPIFFE_ID_NOT_ALLOWED, f"its requester's own, '{OWN_SVID}'"),
    ("a name outside the namespace's policy",
     request(pem=pkcs10(dns=(f"web.{NS}.svc", "web.billing.svc"))), issuer(**ENABLED),
     csr.Action.FAIL, Reason.DNS_NAME_NOT_ALLOWED,
     "spec.request dNSName[1] 'web.billing.svc' is not allowed: it matches none of "
     "policy.allowedDNSNames"),
    ("an IP address outside policy.allowedIPRanges",
     request(pem=pkcs10(ips=("10.0.0.1",))),
     issuer(policy={"allowedIPRanges": ["192.168.0.0/16"]}, **ENABLED),
     csr.Action.FAIL, Reason.IP_ADDRESS_NOT_ALLOWED, "spec.request iPAddress[0] '10.0.0.1'"),
    ("a wildcard needs policy.allowWildcards",
     request(pem=pkcs10(dns=(f"*.{NS}.svc",))), issuer(**ENABLED),
     csr.Action.FAIL, Reason.WILDCARD_NOT_ALLOWED, "spec.request dNSName[0]"),
    ("the key algorithm is checked against policy.allowedKeyAlgorithms",
     request(pem=pkcs10(key_kind="RSA")),
     issuer(policy={"allowedKeyAlgorithms": ["ECDSA"]}, **ENABLED),
     csr.Action.FAIL, Reason.KEY_ALGORITHM_NOT_ALLOWED, "spec.request public key algorithm 'RSA'"),
    ("the issuer has not opted in",
     request(), issuer(), csr.Action.FAIL, Reason.CERTIFICATE_SIGNING_REQUESTS_NOT_ENABLED,
     "spec.certificateSigningRequests.enabled"),
    ("an SSH-only issuer",
     request(), Facts(True, "KeyReady", "", parse_issuer_spec(
         "Issuer", "ca", NS, {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}, **ENABLED})),
     csr.Action.FAIL, Reason.X509_NOT_ENABLED, "does not issue X.509"),
    ("a user that is no ServiceAccount and is not named",
     request(username="alice", groups=("devs", "system:authenticated")), issuer(**ENABLED),
     csr.Action.FAIL, Reason.REQUESTER_NOT_ALLOWED,
     "spec.username 'alice' (spec.groups ['devs', 'system:authenticated']) is not a "
     "ServiceAccount"),
    ("a named user is judged by the Issuer's namespace's policy",
     request(username="alice", groups=()), issuer(**csr_settings(allowedUsers=["alice"])),
     csr.Action.SIGN, Reason.ISSUED, "for 'alice'"),
    ("a named user gets no SPIFFE ID at all",
     request(username="alice", pem=pkcs10(uris=(OWN_SVID,))),
     issuer(**csr_settings(allowedUsers=["alice"])),
     csr.Action.FAIL, Reason.SPIFFE_ID_NOT_ALLOWED, "spec.username 'alice' is none"),
    ("a named group's member, of a ClusterIssuer: {namespace} patterns grant it nothing",
     request(CLUSTER_SIGNER, username="bob", groups=("ops",), pem=pkcs10(dns=("web.svc.local",))),
     issuer("ClusterIssuer", policy={"allowedDNSNames": ["web.{namespace}svc.local"]},
            **csr_settings(allowedGroups=["ops"])),
     csr.Action.FAIL, Reason.DNS_NAME_NOT_ALLOWED, "policy.allowedDNSNames is empty"),
    ("a named group's member, of a ClusterIssuer: literal patterns grant, selector aside",
     request(CLUSTER_SIGNER, username="bob", groups=("ops",), pem=pkcs10(dns=("db.example.com",))),
     issuer("ClusterIssuer", policy={"allowedDNSNames": ["*.example.com", "*.{namespace}.svc"]},
            namespaceSelector={"matchLabels": {"team": "x"}},
            **csr_settings(allowedGroups=["ops"])),
     csr.Action.SIGN, Reason.ISSUED, "db.example.com"),
    ("a ClusterIssuer's namespaceSelector binds ServiceAccounts",
     request(CLUSTER_SIGNER),
     issuer("ClusterIssuer", namespaceSelector={"matchLabels": {"team": "x"}}, **ENABLED),
     csr.Action.FAIL, Reason.NAMESPACE_NOT_ALLOWED, "namespaceSelector"),
    ("an Issuer signs for ServiceAccounts of its own namespace only",
     request(username="system:serviceaccount:billing:web"), issuer(**ENABLED),
     csr.Action.FAIL, Reason.NAMESPACE_NOT_ALLOWED, "of namespace 'shop'"),
    ("a usage the issuer does not allow",
     request(usages=("digital signature", "client auth", "code signing")), issuer(**ENABLED),
     csr.Action.FAIL, Reason.USAGE_NOT_ALLOWED,
     "spec.usages[2] 'code signing' is not allowed: it is not in "
     "spec.certificateSigningRequests.allowedUsages"),
    ("a CA usage is never allowed",
     request(usages=("cert sign",)), issuer(**ENABLED),
     csr.Action.FAIL, Reason.USAGE_NOT_ALLOWED, "spec.usages[0] 'cert sign'"),
    ("a usage the key cannot serve is refused before KMS is asked",
     request(usages=("key agreement",), pem=pkcs10(key_kind="RSA")),
     issuer(**csr_settings(allowedUsages=["key agreement"])),
     csr.Action.FAIL, Reason.INVALID_REQUEST, "'key agreement' needs an ECDSA key"),
    ("an X509-SVID is for both ends of mutual TLS",
     request(usages=("digital signature", "client auth"), pem=pkcs10(dns=(), uris=(OWN_SVID,))),
     issuer(**ENABLED), csr.Action.FAIL, Reason.INVALID_REQUEST, "'server auth' and 'client auth'"),
    ("an X509-SVID carries one URI",
     request(pem=pkcs10(uris=(OWN_SVID, "https://web.example"))), issuer(**ENABLED),
     csr.Action.FAIL, Reason.INVALID_REQUEST, "exactly one URI SAN"),
    ("the PKCS#10 signature must verify",
     request(pem=pkcs10(tamper=True)), issuer(**ENABLED),
     csr.Action.FAIL, Reason.INVALID_REQUEST, "does not verify"),
    ("a weak key is refused",
     request(pem=pkcs10(key_kind="RSA1024")), issuer(**ENABLED),
     csr.Action.FAIL, Reason.UNSUPPORTED_KEY_ALGORITHM, "RSA key size 1024"),
    ("a subject attribute a certificate cannot carry",
     request(pem=pkcs10(subject=(x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c"),))),
     issuer(**ENABLED), csr.Action.FAIL, Reason.INVALID_REQUEST, "subject attribute"),
    ("a subjectAltName type a certificate cannot carry",
     request(pem=pkcs10(other=(x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),))),
     issuer(**ENABLED), csr.Action.FAIL, Reason.INVALID_REQUEST, "of type RegisteredID"),
    ("not PEM at all",
     request(pem=b"hello"), issuer(**ENABLED),
     csr.Action.FAIL, Reason.INVALID_REQUEST, "not a readable PEM PKCS#10 request"),
    ("an unknown signer name",
     request(f"issuers.signet.dev/{NS}"), None,
     csr.Action.FAIL, Reason.UNKNOWN_SIGNER, "names no issuer"),
    ("an issuer not ready is waited for",
     request(), issuer(ready=False, **ENABLED),
     csr.Action.WAIT, Reason.ISSUER_NOT_READY, "not ready"),
    ("an issuer not seen yet is waited for",
     request(), None, csr.Action.WAIT, Reason.ISSUER_NOT_FOUND, "not found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("req", "facts", "action", "reason", "text"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision(
    req: csr.CsrRequest, facts: Facts | None, action: csr.Action, reason: Reason, text: str
) -> None:
    decision = decide(req, facts)
    assert (decision.action, decision.reason) == (action, reason), decision.message
    assert text in decision.message
    assert (decision.plan is not None) == (action is csr.Action.SIGN)


def test_a_missing_issuer_confirmed_by_the_api_fails_the_request() -> None:
    decision = decide(request(), None, issuer_absent=True)
    assert (decision.action, decision.reason) == (csr.Action.FAIL, Reason.UNKNOWN_SIGNER)
    assert "Issuer 'ca' does not exist in namespace 'shop'" in decision.message


def test_the_plan_says_exactly_what_was_asked_and_granted() -> None:
    subject = (
        x509.NameAttribute(NameOID.COMMON_NAME, f"web.{NS}.svc"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Shop"),
    )
    decision = decide(request(pem=pkcs10(subject=subject)), issuer(**ENABLED))
    plan = decision.plan
    assert plan is not None
    assert plan.leaf.common_name == f"web.{NS}.svc" and plan.leaf.organizations == ("Shop",)
    assert plan.leaf.dns_names == (f"web.{NS}.svc",) and plan.leaf.spiffe_id is None
    assert plan.leaf.usages == USAGES
    assert plan.service_account == (NS, "web")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert plan.public_key.public_bytes(*spki) == key("EC").public_key().public_bytes(*spki)

    svid = decide(request(pem=pkcs10(dns=(), uris=(OWN_SVID,))), issuer(**ENABLED)).plan
    assert svid is not None and svid.leaf.spiffe_id == OWN_SVID and svid.leaf.uris == ()


@pytest.mark.parametrize(
    ("expiration", "settings", "max_duration", "lifetime"),
    [
        (None, {}, "2160h", datetime.timedelta(hours=24)),
        (3600, {}, "2160h", datetime.timedelta(hours=1)),
        (None, {"defaultDuration": "72h"}, "48h", datetime.timedelta(hours=48)),
        (86400 * 365, {"defaultDuration": "8760h"}, "2160h", datetime.timedelta(hours=2160)),
    ],
)
def test_the_lifetime_is_the_shortest_of_request_default_and_policy(
    expiration: int | None,
    settings: dict[str, str],
    max_duration: str,
    lifetime: datetime.timedelta,
) -> None:
    facts = issuer(policy={"maxDuration": max_duration}, **csr_settings(**settings))
    plan = decide(request(expiration=expiration), facts).plan
    assert plan is not None and plan.lifetime == plan.leaf.duration == lifetime


def test_a_lifetime_below_the_apiservers_minimum_is_refused_naming_the_limit() -> None:
    decision = decide(request(), issuer(policy={"maxDuration": "5m"}, **ENABLED))
    assert (decision.action, decision.reason) == (csr.Action.FAIL, Reason.INVALID_DURATION)
    assert "policy.maxDuration of Issuer/shop/ca is 5m" in decision.message


def _body(conditions: list[dict[str, str]], certificate: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions}
    if certificate:
        status["certificate"] = certificate
    return {"metadata": {"name": "c"}, "spec": {}, "status": status}


@pytest.mark.parametrize(
    ("body", "phase"),
    [
        (_body([]), csr.Phase.PENDING),
        (_body([{"type": "Approved", "status": "False"}]), csr.Phase.PENDING),
        (_body([{"type": "Approved", "status": "True"}]), csr.Phase.APPROVED),
        (_body([{"type": "Approved"}]), csr.Phase.APPROVED),
        (_body([{"type": "Denied", "status": "True"}]), csr.Phase.DONE),
        (
            _body([{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}]),
            csr.Phase.DONE,
        ),
        (_body([{"type": "Approved", "status": "True"}], certificate="UEVN"), csr.Phase.DONE),
    ],
)
def test_only_approved_unanswered_requests_are_signed(
    body: dict[str, Any], phase: csr.Phase
) -> None:
    assert csr.phase(body) is phase


@pytest.mark.parametrize(
    ("username", "account"),
    [
        (SA, (NS, "web")),
        ("system:serviceaccount:shop", None),
        ("system:serviceaccount::web", None),
        ("system:serviceaccount:shop:web:x", None),
        ("system:serviceaccounts:shop", None),
        ("alice", None),
    ],
)
def test_service_accounts_are_told_by_their_user_name(
    username: str, account: tuple[str, str] | None
) -> None:
    assert csr.service_account(username) == account


def test_a_request_belongs_to_the_issuers_namespace_or_the_requesters() -> None:
    assert csr.home_namespace(ISSUER_SIGNER, "alice") == NS
    assert csr.home_namespace(CLUSTER_SIGNER, "system:serviceaccount:billing:web") == "billing"
    assert csr.home_namespace(CLUSTER_SIGNER, "alice") is None
    assert csr.home_namespace("example.com/x", SA) is None


def test_parse_request_reads_the_wire_form() -> None:
    pem = pkcs10()
    body = {
        "metadata": {"name": "c", "uid": "u"},
        "spec": {
            "signerName": ISSUER_SIGNER,
            "request": base64.b64encode(pem).decode(),
            "username": SA,
            "uid": "user-uid",
            "groups": ["system:serviceaccounts"],
            "usages": ["client auth"],
            "expirationSeconds": 600,
        },
    }
    parsed = csr.parse_request(body)
    assert parsed.pem == pem and parsed.expiration == datetime.timedelta(minutes=10)
    assert (parsed.username, parsed.groups, parsed.usages) == (
        SA,
        ("system:serviceaccounts",),
        ("client auth",),
    )
    with pytest.raises(ValueError, match=r"spec\.request is not base64"):
        csr.parse_request({"spec": {"request": "not base64!"}})
    assert (
        csr.certificate_of({"status": {"certificate": base64.b64encode(b"PEM").decode()}}) == b"PEM"
    )


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"enabled": "yes"}, "spec.certificateSigningRequests.enabled: expected true or false"),
        ({"defaultDuration": "5m"}, "defaultDuration must be at least 10m"),
        ({"allowedUsages": ["cert sign"]}, "allowedUsages: 'cert sign' is not one of"),
        ({"allowedUsers": "alice"}, "allowedUsers: expected a list of non-empty strings"),
        ({"allowedGroups": [""]}, "allowedGroups: expected a list of non-empty strings"),
    ],
)
def test_the_issuer_opt_in_is_validated(settings: dict[str, Any], text: str) -> None:
    with pytest.raises(SpecError) as raised:
        issuer(certificateSigningRequests=settings)
    assert raised.value.reason.permanent
    assert text in str(raised.value)


def test_the_issuer_opt_in_defaults_to_off_and_narrow() -> None:
    facts = issuer()
    assert facts.spec is not None
    settings = facts.spec.certificate_signing_requests
    assert not settings.enabled and settings.default_duration == datetime.timedelta(hours=24)
    assert settings.allowed_usages == USAGES
    assert (settings.allowed_users, settings.allowed_groups) == ((), ())

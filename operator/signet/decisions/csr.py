"""Kubernetes CertificateSigningRequests: what an approved request for Signet's signer gets.

A CertificateSigningRequest (certificates.k8s.io/v1) names a signer, carries a PKCS#10
request and, once someone with ``approve`` on that signer says so, an ``Approved``
condition. Approval stays with Kubernetes; Signet signs only approved requests for its own
signers (``clusterissuers.signet.dev/<name>``, ``issuers.signet.dev/<namespace>.<name>``,
the names PodCertificateRequests use) and decides only what an approved request may get.

Who asked is what the apiserver wrote into ``spec.username`` and ``spec.groups`` when the
request was created, never anything inside the PKCS#10. A ServiceAccount
(``system:serviceaccount:<namespace>:<name>``) gets what the issuer's policy grants its
namespace, checked by the very functions a Certificate of that namespace meets
(`signet.decisions.gates`, `signet.policy`), so no request path grants what another would
refuse. Anyone else belongs to no namespace the policy could speak for, so it is refused
unless the issuer names the user or one of its groups; then the names are checked against
the Issuer's own namespace, or for a ClusterIssuer against the patterns that do not use
``{namespace}``. A SPIFFE ID is a workload's identity: only a ServiceAccount gets one, and
only its own.

The certificate says what the request asks for, narrowed never widened: the subject
attributes a Certificate may carry, the subjectAltName, and ``spec.usages`` as far as the
issuer allows them; other requested extensions are ignored (a leaf is never a CA). Pure:
the caller resolves the issuer and the namespace's labels. A refusal is final (the
``Failed`` condition, naming the field and the rule); a transient problem is waited out.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from signet import policy
from signet.api.certificate import (
    EXTENDED_USAGES,
    SPIFFE_USAGES_RULE,
    CertificateSpec,
    IssuerRef,
    PrivateKeySpec,
    Subject,
    X509Spec,
)
from signet.api.issuer import MIN_CSR_DURATION, IssuerSpec
from signet.decisions import signers
from signet.decisions.gates import IssuerFacts, Refusal
from signet.decisions.leaf import leaf_request
from signet.decisions.signers import Action, Decision, is_ours, issuer_of
from signet.pki import keys
from signet.pki.request import LeafRequest
from signet.reasons import Reason

__all__ = [
    "Action",
    "CsrDecision",
    "CsrPlan",
    "CsrRequest",
    "Phase",
    "certificate_of",
    "decide",
    "home_namespace",
    "is_ours",
    "issuer_of",
    "parse_request",
    "phase",
    "service_account",
]

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SUBJECT_ATTRIBUTES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
}
"""The subject attributes a Certificate may carry; a request for any other is refused
rather than silently dropped, so the certificate never says less than the requester
believes without telling it."""

_CERTIFICATE_FIELDS = (
    ("spec.x509.spiffe.serviceAccount", "the requester's SPIFFE ID, ServiceAccount"),
    ("spec.x509.dnsNames", "spec.request dNSName"),
    ("spec.x509.ipAddresses", "spec.request iPAddress"),
    ("spec.x509.uris", "spec.request URI"),
    ("spec.x509.emailAddresses", "spec.request rfc822Name"),
    ("spec.x509.commonName", "spec.request subject CN"),
    ("spec.privateKey.algorithm", "spec.request public key algorithm"),
)
"""How the policy's messages (which speak of a Certificate's fields) name the same values
in a CertificateSigningRequest."""


class Phase(enum.Enum):
    PENDING = "pending"
    """Not approved (yet): left alone; approval arrives as a watch event."""
    APPROVED = "approved"
    """Approved and unanswered: Signet's to sign or refuse."""
    DONE = "done"
    """Denied, Failed or already carrying a certificate: never looked at again."""


@dataclass(frozen=True)
class CsrRequest:
    """The parts of a CertificateSigningRequest a decision reads."""

    name: str
    uid: str
    signer_name: str
    username: str
    user_uid: str
    groups: tuple[str, ...]
    usages: tuple[str, ...]
    expiration: datetime.timedelta | None
    pem: bytes


@dataclass(frozen=True)
class CsrPlan:
    """What the certificate will say: the requester's key, never Signet's, and the leaf as
    checked (its duration is the lifetime; issuance backdates within it)."""

    public_key: keys.LeafPublicKey
    leaf: LeafRequest
    lifetime: datetime.timedelta
    service_account: tuple[str, str] | None


CsrDecision = Decision[CsrPlan]
"""Never DENY: approving is Kubernetes' business, so Signet's refusals are all Failed."""


def service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) when ``username`` is a ServiceAccount's, else None."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, colon, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if not (namespace and colon and name) or ":" in name:
        return None
    return namespace, name


def home_namespace(signer: str, username: str) -> str | None:
    """The one namespace a request belongs to, if any: an Issuer's own, or for a
    ClusterIssuer the requesting ServiceAccount's. An operator serving some namespaces
    only answers requests that belong to one of them (another installation serves the
    rest)."""
    target = issuer_of(signer)
    if target is None:
        return None
    if target[0] == "Issuer":
        return target[1]
    account = service_account(username)
    return account[0] if account else None


def phase(body: Mapping[str, Any]) -> Phase:
    """Where the request stands, from its status alone."""
    status = body.get("status") or {}
    if status.get("certificate"):
        return Phase.DONE
    types = {
        c.get("type") for c in status.get("conditions") or [] if c.get("status", "True") == "True"
    }
    if types & {"Denied", "Failed"}:
        return Phase.DONE
    return Phase.APPROVED if "Approved" in types else Phase.PENDING


def certificate_of(body: Mapping[str, Any]) -> bytes:
    """The PEM chain in ``status.certificate`` (base64 on the wire); empty if none."""
    value = (body.get("status") or {}).get("certificate") or ""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def parse_request(body: Mapping[str, Any]) -> CsrRequest:
    """A request body as the watch delivers it; ValueError for one that cannot be read."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    try:
        pem = base64.b64decode(spec.get("request") or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("spec.request is not base64") from None
    seconds = spec.get("expirationSeconds")
    groups = spec.get("groups") or []
    usages = spec.get("usages") or []
    if not isinstance(groups, list) or not isinstance(usages, list):
        raise ValueError("spec.groups and spec.usages must be lists")
    return CsrRequest(
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        signer_name=str(spec.get("signerName") or ""),
        username=str(spec.get("username") or ""),
        user_uid=str(spec.get("uid") or ""),
        groups=tuple(str(g) for g in groups),
        usages=tuple(str(u) for u in usages),
        expiration=None if seconds is None else datetime.timedelta(seconds=int(seconds)),
        pem=pem,
    )


def decide(
    request: CsrRequest,
    issuer: IssuerFacts | None,
    *,
    namespace_labels: dict[str, str] | None,
    issuer_absent: bool = False,
) -> CsrDecision:
    """Sign, refuse (Failed) or wait for the issuer, for an approved request.
    ``namespace_labels`` are the requesting ServiceAccount's namespace's (None: no such
    namespace, or the requester is no ServiceAccount); ``issuer_absent`` says the API
    confirmed there is no such issuer (not merely that this process has not seen it yet)."""
    account = service_account(request.username)
    refusal = signers.check_signer(
        request.signer_name,
        "spec.signerName",
        issuer,
        issuer_absent=issuer_absent,
        namespace=account[0] if account else None,
        namespace_labels=namespace_labels,
        members="ServiceAccounts of",
        requester=f"spec.username {request.username!r}",
    )
    if refusal is not None:
        if refusal.reason.permanent:
            return _fail(refusal.reason, refusal.message)
        return CsrDecision(Action.WAIT, refusal.reason, refusal.message)
    # The namespace whose policy speaks for the requester: a ServiceAccount's own (an
    # Issuer's, which the gate found to be the same); an Issuer's for anyone else; none
    # for anyone else of a ClusterIssuer, whose allowedUsers/Groups speak instead.
    namespace = home_namespace(request.signer_name, request.username)
    assert issuer is not None and issuer.spec is not None
    spec = issuer.spec
    settings = spec.certificate_signing_requests
    if not settings.enabled:
        return _fail(
            Reason.CERTIFICATE_SIGNING_REQUESTS_NOT_ENABLED,
            f"{spec.ref} does not sign CertificateSigningRequests: "
            "spec.certificateSigningRequests.enabled is not true",
        )
    if account is None:
        refused = _requester_refusal(request, spec)
        if refused is not None:
            return refused
    if not spec.x509_enabled:
        return _fail(Reason.X509_NOT_ENABLED, f"{spec.ref} does not issue X.509 certificates")
    try:
        csr = x509.load_pem_x509_csr(request.pem)
        signature_valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return _fail(
            Reason.INVALID_REQUEST,
            f"spec.request is not a readable PEM PKCS#10 request: {str(error)[:200]}",
        )
    if not signature_valid:
        return _fail(
            Reason.INVALID_REQUEST,
            "spec.request: the PKCS#10 signature does not verify with the request's own "
            "public key (the requester must prove it holds the private key)",
        )
    try:
        public_key = keys.validate_public_key(csr.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return _fail(Reason.UNSUPPORTED_KEY_ALGORITHM, f"spec.request public key: {error}")
    return _decide_names(request, spec, csr, public_key, account, namespace)


def _requester_refusal(request: CsrRequest, spec: IssuerSpec) -> CsrDecision | None:
    settings = spec.certificate_signing_requests
    if request.username in settings.allowed_users:
        return None
    if set(request.groups) & set(settings.allowed_groups):
        return None
    shown = ", ".join(repr(g[:64]) for g in request.groups[:6])
    more = ", ..." if len(request.groups) > 6 else ""
    return _fail(
        Reason.REQUESTER_NOT_ALLOWED,
        f"spec.username {request.username[:253]!r} (spec.groups [{shown}{more}]) is not a "
        f"ServiceAccount, and {spec.ref} signs for other requesters only when "
        "spec.certificateSigningRequests.allowedUsers names the user or allowedGroups one "
        "of its groups",
    )


def _decide_names(
    request: CsrRequest,
    spec: IssuerSpec,
    csr: x509.CertificateSigningRequest,
    public_key: keys.LeafPublicKey,
    account: tuple[str, str] | None,
    namespace: str | None,
) -> CsrDecision:
    settings = spec.certificate_signing_requests
    try:
        subject = _subject(csr.subject)
        dns, ips, uris, emails = _alt_names(csr)
    except ValueError as error:
        return _fail(Reason.INVALID_REQUEST, str(error))
    own = policy.spiffe_id(spec.trust_domain, *account) if account else None
    svid = None
    for index, uri in enumerate(uris):
        if urllib.parse.urlsplit(uri).scheme.lower() != "spiffe":
            continue
        if own is not None and uri == own:
            svid = own
            continue
        whose = (
            f"its requester's own, {own!r}"
            if own
            else f"a ServiceAccount's own, and spec.username {request.username[:253]!r} is none"
        )
        return _fail(
            Reason.SPIFFE_ID_NOT_ALLOWED,
            f"spec.request URI[{index}] {uri[:256]!r} is not allowed: the only SPIFFE ID a "
            f"CertificateSigningRequest may get is {whose}",
        )
    if svid is not None and len(uris) > 1:
        return _fail(
            Reason.INVALID_REQUEST,
            f"spec.request asks for the SPIFFE ID {svid!r} and other URIs: an X509-SVID "
            "carries exactly one URI SAN",
        )
    for index, usage in enumerate(request.usages):
        if usage not in settings.allowed_usages:
            return _fail(
                Reason.USAGE_NOT_ALLOWED,
                f"spec.usages[{index}] {usage[:64]!r} is not allowed: it is not in "
                f"spec.certificateSigningRequests.allowedUsages {list(settings.allowed_usages)} "
                f"of {spec.ref}",
            )
    ekus = [u for u in request.usages if u in EXTENDED_USAGES]
    if svid is not None and ekus and not {"server auth", "client auth"} <= set(ekus):
        return _fail(
            Reason.INVALID_REQUEST, f"spec.usages {list(request.usages)}: {SPIFFE_USAGES_RULE}"
        )
    limits = [
        (
            settings.default_duration,
            f"spec.certificateSigningRequests.defaultDuration of {spec.ref}",
        ),
        (spec.policy.max_duration, f"policy.maxDuration of {spec.ref}"),
    ]
    if request.expiration is not None:
        limits.insert(0, (request.expiration, "spec.expirationSeconds of the request"))
    lifetime = signers.lifetime(
        limits, MIN_CSR_DURATION, "a certificate signing request may ask for"
    )
    if isinstance(lifetime, Refusal):
        return _fail(lifetime.reason, lifetime.message)
    common_name = subject.pop("CN", [None])[0]
    x509_spec = X509Spec(
        common_name=common_name,
        subject=Subject(
            organizations=tuple(subject.get("O", ())),
            organizational_units=tuple(subject.get("OU", ())),
            countries=tuple(subject.get("C", ())),
            localities=tuple(subject.get("L", ())),
            provinces=tuple(subject.get("ST", ())),
        ),
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        uris=tuple(u for u in uris if u != svid),
        email_addresses=tuple(emails),
        usages=request.usages,
        spiffe_service_account=account[1] if svid and account else None,
    )
    certificate = CertificateSpec(
        issuer_ref=IssuerRef(spec.name, spec.kind),
        secret_name="",
        duration=lifetime,
        renew_before=None,
        private_key=_key_spec(public_key),
        x509=x509_spec,
    )
    judged = spec if namespace is not None else _without_namespace_patterns(spec)
    denial = policy.check(certificate, judged, namespace or "")
    if denial is not None:
        return _fail(denial.reason, _in_request_terms(denial.message))
    try:
        leaf = leaf_request(x509_spec, spiffe_id=svid, duration=lifetime)
        leaf.key_usage(public_key)  # usages the key cannot serve are refused before KMS
    except ValueError as error:
        return _fail(Reason.INVALID_REQUEST, f"spec.request and spec.usages: {error}")
    names = [*dns, *ips, *uris, *emails] or [f"CN={common_name}"]
    whom = f"ServiceAccount {account[0]}/{account[1]}" if account else repr(request.username)
    return CsrDecision(
        Action.SIGN,
        Reason.ISSUED,
        f"issuing {', '.join(names[:4])}{', ...' if len(names) > 4 else ''} for {whom}",
        CsrPlan(public_key, leaf, lifetime, account),
    )


def _key_spec(public_key: keys.LeafPublicKey) -> PrivateKeySpec:
    """The requester's key as the policy's allowedKeyAlgorithms names it."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return PrivateKeySpec("RSA", public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return PrivateKeySpec("ECDSA", public_key.key_size)
    return PrivateKeySpec("Ed25519", None)


def _subject(name: x509.Name) -> dict[str, list[str]]:
    """The subject's attributes by short name; ValueError naming any other attribute."""
    found: dict[str, list[str]] = {}
    for attribute in name:
        short = SUBJECT_ATTRIBUTES.get(attribute.oid)
        if short is None or not isinstance(attribute.value, str):
            label = attribute.rfc4514_string().partition("=")[0]
            raise ValueError(
                f"spec.request subject attribute {label} is not supported: Signet issues "
                f"only {', '.join(SUBJECT_ATTRIBUTES.values())}"
            )
        found.setdefault(short, []).append(attribute.value)
    if len(found.get("CN", [])) > 1:
        raise ValueError("spec.request subject has more than one CN; a certificate has one")
    return found


def _alt_names(
    csr: x509.CertificateSigningRequest,
) -> tuple[list[str], list[str], list[str], list[str]]:
    """DNS names, IP addresses, URIs and email addresses asked for, in request order."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], [], [], []
    except ValueError as error:
        raise ValueError(f"spec.request has unreadable extensions: {error}") from None
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    emails: list[str] = []
    for general_name in extension.value:
        if isinstance(general_name, x509.DNSName):
            dns.append(general_name.value)
        elif isinstance(general_name, x509.IPAddress):
            ips.append(str(general_name.value))
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            uris.append(general_name.value)
        elif isinstance(general_name, x509.RFC822Name):
            emails.append(general_name.value)
        else:
            raise ValueError(
                f"spec.request subjectAltName of type {type(general_name).__name__} is not "
                "supported: Signet issues DNS names, IP addresses, URIs and email addresses"
            )
    return dns, ips, uris, emails


def _without_namespace_patterns(spec: IssuerSpec) -> IssuerSpec:
    """The issuer's policy for a requester outside any namespace: a pattern naming
    ``{namespace}`` speaks for the namespaces, so it grants such a requester nothing."""

    def free(patterns: Sequence[str]) -> tuple[str, ...]:
        return tuple(p for p in patterns if "{namespace}" not in p)

    rules = spec.policy
    common_names = rules.allowed_common_names
    return replace(
        spec,
        policy=replace(
            rules,
            allowed_dns_names=free(rules.allowed_dns_names),
            allowed_uris=free(rules.allowed_uris),
            allowed_email_addresses=free(rules.allowed_email_addresses),
            allowed_common_names=None if common_names is None else free(common_names),
        ),
    )


def _in_request_terms(message: str) -> str:
    for certificate_field, request_field in _CERTIFICATE_FIELDS:
        message = message.replace(certificate_field, request_field)
    return message


def _fail(reason: Reason, message: str) -> CsrDecision:
    return CsrDecision(Action.FAIL, reason, message)

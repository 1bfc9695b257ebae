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

from signet import policy
from signet.api.certificate import (
    CertificateSpec,
    IssuerRef,
)
from signet.api.issuer import MIN_CSR_DURATION, IssuerSpec
from signet.decisions import pkcs10, signers
from signet.decisions.gates import IssuerFacts, Refusal
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
_CERTIFICATE_FIELDS = (
    ("spec.x509.spiffe.serviceAccount", "the requester's SPIFFE ID, ServiceAccount"),
    *pkcs10.CERTIFICATE_FIELDS,
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
    requested = pkcs10.read(request.pem)
    if isinstance(requested, Refusal):
        return _fail(requested.reason, requested.message)
    return _decide_names(request, spec, requested, account, namespace)


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
    requested: pkcs10.Requested,
    account: tuple[str, str] | None,
    namespace: str | None,
) -> CsrDecision:
    settings = spec.certificate_signing_requests
    uris = requested.uris
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
    alone = pkcs10.svid_alone(svid, uris)
    if alone is not None:
        return _fail(alone.reason, alone.message)
    for index, usage in enumerate(request.usages):
        if usage not in settings.allowed_usages:
            return _fail(
                Reason.USAGE_NOT_ALLOWED,
                f"spec.usages[{index}] {usage[:64]!r} is not allowed: it is not in "
                f"spec.certificateSigningRequests.allowedUsages {list(settings.allowed_usages)} "
                f"of {spec.ref}",
            )
    mtls = pkcs10.svid_usages(svid, request.usages)
    if mtls is not None:
        return _fail(mtls.reason, mtls.message)
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
    public_key = requested.public_key
    x509_spec = requested.x509_spec(
        uris=(u for u in uris if u != svid),
        usages=request.usages,
        spiffe_service_account=account[1] if svid and account else None,
    )
    certificate = CertificateSpec(
        issuer_ref=IssuerRef(spec.name, spec.kind),
        secret_name="",
        duration=lifetime,
        renew_before=None,
        private_key=pkcs10.key_spec(public_key),
        x509=x509_spec,
    )
    judged = spec if namespace is not None else _without_namespace_patterns(spec)
    denial = policy.check(certificate, judged, namespace or "")
    if denial is not None:
        return _fail(denial.reason, pkcs10.in_request_terms(denial.message, _CERTIFICATE_FIELDS))
    leaf = pkcs10.leaf(x509_spec, public_key, spiffe_id=svid, duration=lifetime)
    if isinstance(leaf, Refusal):
        return _fail(leaf.reason, leaf.message)
    names = requested.names()
    whom = f"ServiceAccount {account[0]}/{account[1]}" if account else repr(request.username)
    return CsrDecision(
        Action.SIGN,
        Reason.ISSUED,
        f"issuing {', '.join(names[:4])}{', ...' if len(names) > 4 else ''} for {whom}",
        CsrPlan(public_key, leaf, lifetime, account),
    )


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


def _fail(reason: Reason, message: str) -> CsrDecision:
    return CsrDecision(Action.FAIL, reason, message)

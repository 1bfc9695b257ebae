"""cert-manager CertificateRequests for Signet's issuers: what an approved request gets.

Signet is a cert-manager external issuer: a ``cert-manager.io/v1`` CertificateRequest whose
``spec.issuerRef.group`` is ``signet.dev`` names a Signet Issuer (in the request's own
namespace) or ClusterIssuer. cert-manager's contract decides when Signet may act: a request
is signed only once it carries the ``Approved`` condition (approval is cert-manager's and
its approvers' business); one carrying ``Denied`` is answered Failed (reason ``Denied``)
without being read; one whose Ready condition says ``Issued``, ``Failed`` or ``Denied`` is
never looked at again.

A request of namespace N gets exactly what a Signet Certificate of namespace N may get,
judged by the very same `signet.policy.check` on the same `X509Spec` (names, SPIFFE ID,
usages, duration, key algorithm), so pointing a cert-manager Certificate at Signet grants
nothing that a Signet Certificate would be refused. A SPIFFE ID in the PKCS#10 is granted
as a Certificate's ``spec.x509.spiffe.serviceAccount`` would be: only N's own
(``spiffe://<trustDomain>/ns/N/sa/<serviceAccount>``) and as the only URI. Signet never
issues a CA certificate to a workload, so ``spec.isCA`` is refused. Pure: the caller
resolves the issuer and the namespace's labels.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signet import policy
from signet.api import GROUP
from signet.api.certificate import (
    DEFAULT_USAGES,
    MAX_DURATION,
    MIN_DURATION,
    USAGES,
    CertificateSpec,
    IssuerRef,
)
from signet.api.duration import format_duration, parse_duration
from signet.api.errors import SpecError
from signet.api.issuer import IssuerSpec
from signet.decisions import pkcs10, signers
from signet.decisions.gates import IssuerFacts, Refusal
from signet.decisions.signers import Action, Decision
from signet.pki import keys
from signet.pki.request import LeafRequest
from signet.reasons import Reason

API_VERSION = "cert-manager.io/v1"
KIND = "CertificateRequest"
CERTIFICATE_NAME_ANNOTATION = "cert-manager.io/certificate-name"
"""Where cert-manager names the Certificate a request was made for (an owner reference
says the same, with its uid)."""
DEFAULT_DURATION = datetime.timedelta(hours=24)
"""A request without ``spec.duration`` gets what a Signet Certificate without one gets."""
FINAL_REASONS = frozenset({"Issued", "Failed", "Denied"})
"""cert-manager's Ready reasons after which a request is never acted on again."""

_CERTIFICATE_FIELDS = (
    ("spec.x509.spiffe.serviceAccount", "spec.request URI SPIFFE ID, ServiceAccount"),
    *pkcs10.CERTIFICATE_FIELDS,
)
"""How the policy's messages (which speak of a Certificate's fields) name the same values
in a CertificateRequest."""


class Phase(enum.Enum):
    PENDING = "pending"
    """Neither Approved nor Denied yet: left alone; the approver's write is a watch event."""
    APPROVED = "approved"
    """Signet's to sign or refuse."""
    DENIED = "denied"
    """Denied by an approver and not answered yet: answered Failed (reason Denied)."""
    DONE = "done"
    """Issued, Failed or Denied: never looked at again."""


@dataclass(frozen=True)
class CertificateRequest:
    """The parts of a CertificateRequest a decision reads."""

    namespace: str
    name: str
    uid: str
    issuer_kind: str
    issuer_name: str
    denied: bool
    is_ca: bool
    duration: str | None
    usages: tuple[str, ...]
    pem: bytes
    certificate: tuple[str, str] | None
    """(name, uid or "") of the cert-manager Certificate that asked, if one did."""

    @property
    def signer_name(self) -> str:
        """The signer its issuerRef names, as Signet's other request paths name it; empty
        when the kind names no kind of issuer (the decision says so)."""
        if self.issuer_kind not in ("Issuer", "ClusterIssuer") or not self.issuer_name:
            return ""
        return signers.signer_name(self.issuer_kind, self.namespace, self.issuer_name)


@dataclass(frozen=True)
class CertificateRequestPlan:
    """What the certificate will say: the requester's key, never Signet's, and the leaf
    as checked."""

    public_key: keys.LeafPublicKey
    leaf: LeafRequest
    lifetime: datetime.timedelta
    key_algorithm: str


CertificateRequestDecision = Decision[CertificateRequestPlan]


def is_ours(body: Mapping[str, Any]) -> bool:
    """Whether the request names one of Signet's issuers (cert-manager's own and other
    external issuers' requests are left alone)."""
    issuer_ref = (body.get("spec") or {}).get("issuerRef") or {}
    return issuer_ref.get("group") == GROUP


def conditions(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The request's conditions by type."""
    found = (body.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def phase(body: Mapping[str, Any]) -> Phase:
    """Where the request stands, from its status alone."""
    status = body.get("status") or {}
    if status.get("certificate") or status.get("failureTime"):
        return Phase.DONE
    found = conditions(body)
    if found.get("Ready", {}).get("reason") in FINAL_REASONS:
        return Phase.DONE
    if found.get("Denied", {}).get("status") == "True":
        return Phase.DENIED
    if found.get("Approved", {}).get("status") == "True":
        return Phase.APPROVED
    return Phase.PENDING


def owner_certificate(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the cert-manager Certificate the request was made for: its owner
    reference, else cert-manager's annotation (uid unknown)."""
    for owner in metadata.get("ownerReferences") or []:
        version = str(owner.get("apiVersion") or "")
        if owner.get("kind") == "Certificate" and version.startswith("cert-manager.io/"):
            return str(owner.get("name") or ""), str(owner.get("uid") or "")
    name = (metadata.get("annotations") or {}).get(CERTIFICATE_NAME_ANNOTATION)
    return (str(name), "") if name else None


def parse_request(body: Mapping[str, Any]) -> CertificateRequest:
    """A request body as the watch delivers it; ValueError for one that cannot be read."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    issuer_ref = spec.get("issuerRef") or {}
    try:
        pem = base64.b64decode(spec.get("request") or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("spec.request is not base64") from None
    usages = spec.get("usages") or []
    if not isinstance(usages, list):
        raise ValueError("spec.usages must be a list")
    duration = spec.get("duration")
    return CertificateRequest(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        issuer_kind=str(issuer_ref.get("kind") or "Issuer"),
        issuer_name=str(issuer_ref.get("name") or ""),
        denied=phase(body) is Phase.DENIED,
        is_ca=spec.get("isCA") is True,
        duration=None if duration is None else str(duration),
        usages=tuple(str(u) for u in usages),
        pem=pem,
        certificate=owner_certificate(metadata),
    )


def decide(
    request: CertificateRequest,
    issuer: IssuerFacts | None,
    *,
    namespace_labels: dict[str, str] | None,
    issuer_absent: bool = False,
) -> CertificateRequestDecision:
    """Sign, refuse (Failed; Denied for a request an approver denied) or wait for the
    issuer (Pending). ``issuer_absent`` says the API confirmed there is no such issuer:
    cert-manager keeps such a request Pending (the issuer may be created next), and so
    does Signet."""
    if request.denied:
        return CertificateRequestDecision(
            Action.DENY,
            Reason.REQUEST_DENIED,
            "the request was denied by an approver (its Denied condition): it is not signed",
        )
    if request.issuer_kind not in ("Issuer", "ClusterIssuer") or not request.issuer_name:
        return _fail(
            Reason.INVALID_ISSUER_REF,
            f"spec.issuerRef.kind {request.issuer_kind[:64]!r} with name "
            f"{request.issuer_name[:253]!r} names no Signet issuer: the kind must be Issuer "
            "or ClusterIssuer and the name must be set",
        )
    if issuer is None and issuer_absent:
        kind, name = request.issuer_kind, request.issuer_name
        where = "" if kind == "ClusterIssuer" else f" in namespace {request.namespace!r}"
        return CertificateRequestDecision(
            Action.WAIT,
            Reason.ISSUER_NOT_FOUND,
            f"spec.issuerRef: {kind} {name!r} does not exist{where}; waiting for it",
        )
    refusal = signers.check_signer(
        request.signer_name,
        "spec.issuerRef",
        issuer,
        issuer_absent=issuer_absent,
        namespace=request.namespace,
        namespace_labels=namespace_labels,
        members="requests of",
        requester=f"namespace {request.namespace!r}",
    )
    if refusal is not None:
        if refusal.reason.permanent:
            return _fail(refusal.reason, refusal.message)
        return CertificateRequestDecision(Action.WAIT, refusal.reason, refusal.message)
    assert issuer is not None and issuer.spec is not None
    spec = issuer.spec
    if not spec.x509_enabled:
        return _fail(Reason.X509_NOT_ENABLED, f"{spec.ref} does not issue X.509 certificates")
    if request.is_ca:
        return _fail(
            Reason.INVALID_REQUEST,
            "spec.isCA is true: Signet never issues CA certificates to workloads (a CA "
            "certificate would let its holder issue any identity)",
        )
    requested = pkcs10.read(request.pem)
    if isinstance(requested, Refusal):
        return _fail(requested.reason, requested.message)
    return _decide_names(request, spec, requested)


def _decide_names(
    request: CertificateRequest, spec: IssuerSpec, requested: pkcs10.Requested
) -> CertificateRequestDecision:
    namespace = request.namespace
    usages = request.usages or DEFAULT_USAGES
    for index, usage in enumerate(request.usages):
        if usage not in USAGES:
            return _fail(
                Reason.USAGE_NOT_ALLOWED,
                f"spec.usages[{index}] {usage[:64]!r} is not allowed: a Signet certificate "
                f"may have only the usages {list(USAGES)}",
            )
    svid, account = _spiffe(requested.uris, spec.trust_domain, namespace)
    svid_refusal = pkcs10.svid_alone(svid, requested.uris) or pkcs10.svid_usages(svid, usages)
    if svid_refusal is not None:
        return _fail(svid_refusal.reason, svid_refusal.message)
    lifetime = _lifetime(request.duration)
    if isinstance(lifetime, Refusal):
        return _fail(lifetime.reason, lifetime.message)
    x509_spec = requested.x509_spec(
        uris=(u for u in requested.uris if u != svid),
        usages=usages,
        spiffe_service_account=account,
    )
    key_spec = pkcs10.key_spec(requested.public_key)
    certificate = CertificateSpec(
        issuer_ref=IssuerRef(spec.name, spec.kind),
        secret_name="",
        duration=lifetime,
        renew_before=None,
        private_key=key_spec,
        x509=x509_spec,
    )
    denial = policy.check(certificate, spec, namespace)
    if denial is not None:
        return _fail(denial.reason, pkcs10.in_request_terms(denial.message, _CERTIFICATE_FIELDS))
    leaf = pkcs10.leaf(x509_spec, requested.public_key, spiffe_id=svid, duration=lifetime)
    if isinstance(leaf, Refusal):
        return _fail(leaf.reason, leaf.message)
    names = requested.names()
    return CertificateRequestDecision(
        Action.SIGN,
        Reason.ISSUED,
        f"issuing {', '.join(names[:4])}{', ...' if len(names) > 4 else ''} for namespace "
        f"{namespace}",
        CertificateRequestPlan(requested.public_key, leaf, lifetime, key_spec.algorithm),
    )


def _spiffe(uris: list[str], trust_domain: str, namespace: str) -> tuple[str | None, str | None]:
    """The SPIFFE ID a request of ``namespace`` may be granted, and its ServiceAccount: a
    URI of the namespace's own identities. Any other SPIFFE URI stays a plain URI, which
    the policy refuses with its reason."""
    prefix = policy.spiffe_id(trust_domain, namespace, "")
    for uri in uris:
        account = uri.removeprefix(prefix)
        if uri.startswith(prefix) and account and "/" not in account:
            return uri, account
    return None, None


def _lifetime(duration: str | None) -> datetime.timedelta | Refusal:
    """``spec.duration`` (cert-manager writes Go durations such as ``2160h0m0s``), within
    the bounds a Certificate's must keep; the issuer's maxDuration is the policy's."""
    if duration is None:
        return DEFAULT_DURATION
    try:
        value = parse_duration(duration, field="spec.duration")
    except SpecError as error:
        return Refusal(error.reason, error.message)
    if not MIN_DURATION <= value <= MAX_DURATION:
        return Refusal(
            Reason.INVALID_DURATION,
            f"spec.duration {format_duration(value)} is not between "
            f"{format_duration(MIN_DURATION)} and {format_duration(MAX_DURATION)}",
        )
    return value


def _fail(reason: Reason, message: str) -> CertificateRequestDecision:
    return CertificateRequestDecision(Action.FAIL, reason, message)

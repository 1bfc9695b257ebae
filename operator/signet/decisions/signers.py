"""Signet's signers, as Kubernetes' own certificate requests name them, and what deciding a
request to one shares.

PodCertificateRequests and CertificateSigningRequests name Signet's issuers the same way
(``clusterissuers.signet.dev/<name>``, ``issuers.signet.dev/<namespace>.<name>``,
cert-manager's naming for its CSR signers), and before its own policy a request of either
kind passes the same gate: the signer names an issuer, an Issuer serves only its own
namespace, the issuer exists and is ready, and a ClusterIssuer selects the requester's
namespace. Its certificate then lives as long as the shortest limit that applies. Both
paths decide these through one copy, so they cannot drift apart in which requests wait
and which are refused, nor in how a refusal reads.

Pure, like the rest of `signet.decisions`: the caller resolves the issuer and the
namespace's labels.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from signet.api.duration import format_duration
from signet.decisions.gates import IssuerFacts, Refusal, check_issuer
from signet.reasons import Reason

CLUSTER_ISSUER_SIGNERS = "clusterissuers.signet.dev/"
ISSUER_SIGNERS = "issuers.signet.dev/"

P = TypeVar("P")


class Action(enum.Enum):
    SIGN = "sign"
    DENY = "deny"
    """Refused by policy: a PodCertificateRequest's Denied (a CertificateSigningRequest's
    approval is Kubernetes' business, so Signet refuses one only as Failed)."""
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision(Generic[P]):
    """A request's answer; ``plan`` (what the certificate will say) only for SIGN."""

    action: Action
    reason: Reason
    message: str
    plan: P | None = None


def signer_name(kind: str, namespace: str | None, name: str) -> str:
    """The signer an issuer answers for."""
    if kind == "ClusterIssuer":
        return CLUSTER_ISSUER_SIGNERS + name
    return f"{ISSUER_SIGNERS}{namespace}.{name}"


def is_ours(signer: str) -> bool:
    """Whether Signet answers requests for ``signer`` at all (others are left alone)."""
    return signer.startswith((CLUSTER_ISSUER_SIGNERS, ISSUER_SIGNERS))


def issuer_of(signer: str) -> tuple[str, str, str] | None:
    """(kind, namespace or "", name) of the issuer behind one of our signers; None when the
    name cannot name one. A namespace has no dots, so the first dot ends it."""
    if signer.startswith(CLUSTER_ISSUER_SIGNERS):
        name = signer.removeprefix(CLUSTER_ISSUER_SIGNERS)
        return ("ClusterIssuer", "", name) if name and "/" not in name else None
    if signer.startswith(ISSUER_SIGNERS):
        namespace, dot, name = signer.removeprefix(ISSUER_SIGNERS).partition(".")
        if namespace and dot and name and "/" not in name:
            return ("Issuer", namespace, name)
    return None


def check_signer(
    signer: str,
    signer_field: str,
    issuer: IssuerFacts | None,
    *,
    issuer_absent: bool,
    namespace: str | None,
    namespace_labels: dict[str, str] | None,
    members: str,
    requester: str,
) -> Refusal | None:
    """The gate before a request path's own policy; a permanent reason refuses, any other
    is waited out.

    ``namespace`` is the requester's; None for a requester of no namespace (a
    CertificateSigningRequest's user that is no ServiceAccount), for whom a
    namespaceSelector cannot speak, so only the issuer's existence and readiness are
    checked. ``signer_field``, ``members`` and ``requester`` word the refusals in the
    request's own terms. ``issuer_absent`` says the API confirmed there is no such issuer
    (not merely that this process has not seen it yet)."""
    target = issuer_of(signer)
    if target is None:
        return Refusal(
            Reason.UNKNOWN_SIGNER,
            f"{signer_field} {signer!r} names no issuer: Signet's signers are "
            f"{CLUSTER_ISSUER_SIGNERS}<name> and {ISSUER_SIGNERS}<namespace>.<name>",
        )
    kind, issuer_namespace, name = target
    if kind == "Issuer" and namespace is not None and namespace != issuer_namespace:
        return Refusal(
            Reason.NAMESPACE_NOT_ALLOWED,
            f"Issuer {issuer_namespace}/{name} signs only for {members} namespace "
            f"{issuer_namespace!r}, not {requester}; use a ClusterIssuer to serve several "
            "namespaces",
        )
    if issuer is None and issuer_absent:
        where = "" if kind == "ClusterIssuer" else f" in namespace {issuer_namespace!r}"
        return Refusal(
            Reason.UNKNOWN_SIGNER,
            f"{signer_field} {signer!r}: {kind} {name!r} does not exist{where}",
        )
    if namespace is None:
        judged = issuer_namespace if kind == "Issuer" else ""
        refusal = check_issuer(kind, name, judged, issuer, namespace_labels={})
        if refusal is not None and refusal.reason is Reason.NAMESPACE_NOT_ALLOWED:
            return None  # a namespaceSelector chooses namespaces, and this is of none
        return refusal
    return check_issuer(kind, name, namespace, issuer, namespace_labels=namespace_labels)


def lifetime(
    limits: Iterable[tuple[datetime.timedelta, str]], minimum: datetime.timedelta, allowed: str
) -> datetime.timedelta | Refusal:
    """The shortest of the limits that apply (the first listed, where two agree, is the one
    a refusal names), or the refusal when that is less than ``minimum``; ``allowed`` says
    whose minimum it is."""
    value, limit = min(limits, key=lambda pair: pair[0])
    if value < minimum:
        return Refusal(
            Reason.INVALID_DURATION,
            f"{limit} is {format_duration(value)}, shorter than the "
            f"{format_duration(minimum)} {allowed}",
        )
    return value

"""Kubernetes' own PodCertificateRequests: may this pod have its identity, and what exactly.

The kubelet makes a key pair on the node for a pod that mounts a ``podCertificate``
projected volume, and asks for a certificate with a PodCertificateRequest naming a signer.
Signet's signers are its issuers (``clusterissuers.signet.dev/<name>``,
``issuers.signet.dev/<namespace>.<name>``, cert-manager's naming for its CSR signers), and
what a pod gets is fixed by who it is, never by what it asks: the SPIFFE ID of its
ServiceAccount in its own namespace, for client and server auth. The apiserver has
already checked that the node, pod and ServiceAccount are real and belong together, and
that the stub CSR is signed by the key it carries.

Pure: the caller resolves the issuer and the namespace's labels; the clock is passed in.
Every refusal names its reason and the rule; a request is answered once (its status is
immutable), so a refusal is final and a transient problem is waited out until the request
is too old to be worth answering. The signer names, the gate before the pod's own policy
and the lifetime rule are the ones CertificateSigningRequests meet
(`signet.decisions.signers`; its names are re-exported here, where callers first found
them).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet import policy
from signet.api.issuer import (
    MIN_POD_CERTIFICATE_DURATION,
    POD_DNS_NAMES_ANNOTATION,
    IssuerSpec,
)
from signet.decisions import signers
from signet.decisions.gates import IssuerFacts, Refusal
from signet.decisions.signers import (
    CLUSTER_ISSUER_SIGNERS,
    ISSUER_SIGNERS,
    Action,
    Decision,
    is_ours,
    issuer_of,
    signer_name,
)
from signet.pki.names import validate_dns_name
from signet.reasons import Reason

__all__ = [
    "CLUSTER_ISSUER_SIGNERS",
    "ISSUER_SIGNERS",
    "Action",
    "PodDecision",
    "PodRequest",
    "SigningPlan",
    "answered",
    "begin_refresh_at",
    "decide",
    "is_ours",
    "issuer_of",
    "key_type",
    "parse_request",
    "requested_dns_names",
    "requested_key",
    "signer_name",
]

USAGES = ("digital signature", "key encipherment", "server auth", "client auth")
"""An X509-SVID that works on both ends of mutual TLS; key encipherment is dropped for
non-RSA keys by the leaf builder."""

KEY_TYPE_ALGORITHMS = {
    "RSA3072": "RSA",
    "RSA4096": "RSA",
    "ECDSAP256": "ECDSA",
    "ECDSAP384": "ECDSA",
    "ECDSAP521": "ECDSA",
    "ED25519": "Ed25519",
}
"""The kubelet's key types and the policy's name for each one's algorithm."""

MAX_DNS_NAMES = 16
"""DNS names one pod may ask for: a pod answers for a few service names, not a zone."""

REFRESH_FRACTION = 2 / 3
JITTER_FRACTION = 0.05
"""beginRefreshAt moves earlier by up to this share of the lifetime, spread by request UID,
so pods started together do not all come back in the same second."""
REFRESH_MARGIN = datetime.timedelta(minutes=10)
"""The apiserver wants beginRefreshAt this far inside the validity period, at both ends."""


@dataclass(frozen=True)
class PodRequest:
    """The parts of a PodCertificateRequest a decision reads."""

    namespace: str
    name: str
    uid: str
    signer_name: str
    pod_name: str
    pod_uid: str
    service_account_name: str
    service_account_uid: str
    node_name: str
    node_uid: str
    max_expiration: datetime.timedelta
    stub_pkcs10: bytes
    pkix_public_key: bytes = b""
    """Set instead of the stub by kubelets that ask through v1beta1."""
    user_annotations: Mapping[str, str] = field(default_factory=dict)
    created: datetime.datetime | None = None


@dataclass(frozen=True)
class SigningPlan:
    """What the certificate will say; the key is the kubelet's, never Signet's."""

    public_key: PublicKeyTypes
    key_type: str
    spiffe_id: str
    lifetime: datetime.timedelta
    dns_names: tuple[str, ...] = ()


PodDecision = Decision[SigningPlan]


def parse_request(body: Mapping[str, Any]) -> PodRequest:
    """A request body as the watch delivers it; ValueError for one that cannot be read."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    created = metadata.get("creationTimestamp")
    annotations = spec.get("unverifiedUserAnnotations") or {}
    return PodRequest(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        signer_name=str(spec.get("signerName") or ""),
        pod_name=str(spec.get("podName") or ""),
        pod_uid=str(spec.get("podUID") or ""),
        service_account_name=str(spec.get("serviceAccountName") or ""),
        service_account_uid=str(spec.get("serviceAccountUID") or ""),
        node_name=str(spec.get("nodeName") or ""),
        node_uid=str(spec.get("nodeUID") or ""),
        max_expiration=datetime.timedelta(seconds=int(spec.get("maxExpirationSeconds") or 86400)),
        stub_pkcs10=_base64(spec, "stubPKCS10Request"),
        pkix_public_key=_base64(spec, "pkixPublicKey"),
        user_annotations=dict(annotations) if isinstance(annotations, Mapping) else {},
        created=datetime.datetime.fromisoformat(created) if isinstance(created, str) else None,
    )


def _base64(spec: Mapping[str, Any], field: str) -> bytes:
    try:
        return base64.b64decode(spec.get(field) or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"spec.{field} is not base64") from None


def answered(body: Mapping[str, Any]) -> bool:
    """Whether the request already has its one answer (Issued, Denied or Failed): its status
    is immutable from then on, so Signet never looks at it again."""
    status = body.get("status") or {}
    if status.get("certificateChain"):
        return True
    return any(
        c.get("type") in ("Issued", "Denied", "Failed") for c in status.get("conditions") or []
    )


def key_type(public_key: PublicKeyTypes) -> str | None:
    """The kubelet's name for the type of ``public_key``; None for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return {3072: "RSA3072", 4096: "RSA4096"}.get(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSAP256", "secp384r1": "ECDSAP384", "secp521r1": "ECDSAP521"}.get(
            public_key.curve.name
        )
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ED25519"
    return None


def requested_key(request: PodRequest) -> PublicKeyTypes:
    """The key to certify: the stub CSR's, or (from a v1beta1 kubelet) ``pkixPublicKey``.
    The apiserver verified the stub's signature, or the proof of possession, on
    admission; only the key is used, the (empty) subject and any extensions never are."""
    if request.stub_pkcs10:
        try:
            return x509.load_der_x509_csr(request.stub_pkcs10).public_key()
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"spec.stubPKCS10Request is not a readable PKCS#10 request: {error}"
            ) from None
    if request.pkix_public_key:
        try:
            return serialization.load_der_public_key(request.pkix_public_key)
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise ValueError(f"spec.pkixPublicKey is not a readable public key: {error}") from None
    raise ValueError(
        "the request carries no key: spec.stubPKCS10Request is empty, and no v1beta1 "
        "spec.pkixPublicKey could be read (is certificates.k8s.io/v1beta1 served?)"
    )


def decide(
    request: PodRequest,
    issuer: IssuerFacts | None,
    *,
    namespace_labels: dict[str, str] | None,
    now: datetime.datetime,
    issuer_absent: bool = False,
) -> PodDecision:
    """Sign, deny, or wait for the issuer. ``issuer_absent`` says the API confirmed there is
    no such issuer (not merely that this process has not seen it yet)."""
    refusal = signers.check_signer(
        request.signer_name,
        "signer",
        issuer,
        issuer_absent=issuer_absent,
        namespace=request.namespace,
        namespace_labels=namespace_labels,
        members="pods in",
        requester=repr(request.namespace),
    )
    if refusal is not None:
        if refusal.reason.permanent:
            return _deny(refusal.reason, refusal.message)
        # Waited out however long it takes, never Failed: the kubelet treats Failed as
        # final for the pod, while a request left pending is deleted by the controller-
        # manager's cleaner and the kubelet then asks again.
        return PodDecision(Action.WAIT, refusal.reason, refusal.message)
    assert issuer is not None and issuer.spec is not None
    spec = issuer.spec
    settings = spec.pod_certificates
    if not settings.enabled:
        return _deny(
            Reason.POD_CERTIFICATES_NOT_ENABLED,
            f"{spec.ref} does not sign PodCertificateRequests: spec.podCertificates.enabled "
            "is not true",
        )
    if not spec.x509_enabled:
        return _deny(Reason.X509_NOT_ENABLED, f"{spec.ref} does not issue X.509 certificates")
    dns_names = requested_dns_names(request.user_annotations, spec)
    if isinstance(dns_names, Decision):
        return dns_names
    try:
        public_key = requested_key(request)
    except ValueError as error:
        return _deny(Reason.INVALID_REQUEST, str(error))
    kubelet_type = key_type(public_key)
    allowed = settings.allowed_key_types
    if kubelet_type not in allowed:
        named = kubelet_type or type(public_key).__name__
        hint = f"use {' or '.join(allowed)}" if allowed else "it is empty"
        return _deny(
            Reason.UNSUPPORTED_KEY_TYPE,
            f"key type {named} is not accepted by {spec.ref}: it is not in "
            f"spec.podCertificates.allowedKeyTypes {list(allowed)}; {hint}",
        )
    assert kubelet_type is not None
    denial = policy.check_pod_identity(
        spec, request.namespace, request.service_account_name, KEY_TYPE_ALGORITHMS[kubelet_type]
    )
    if denial is None and dns_names:
        field = f"spec.unverifiedUserAnnotations[{POD_DNS_NAMES_ANNOTATION!r}]"
        denial = policy.check_pod_dns_names(spec, request.namespace, dns_names, field)
    if denial is not None:
        return _deny(denial.reason, denial.message)
    lifetime = signers.lifetime(
        [
            (request.max_expiration, "spec.maxExpirationSeconds of the request"),
            (settings.default_duration, f"spec.podCertificates.defaultDuration of {spec.ref}"),
            (spec.policy.max_duration, f"policy.maxDuration of {spec.ref}"),
        ],
        MIN_POD_CERTIFICATE_DURATION,
        "the apiserver accepts for a pod certificate",
    )
    if isinstance(lifetime, Refusal):
        return _deny(lifetime.reason, lifetime.message)
    svid = policy.spiffe_id(spec.trust_domain, request.namespace, request.service_account_name)
    return PodDecision(
        Action.SIGN,
        Reason.ISSUED,
        f"issuing {svid} ({kubelet_type}) for pod {request.pod_name!r} on node "
        f"{request.node_name!r}",
        SigningPlan(public_key, kubelet_type, svid, lifetime, dns_names),
    )


def requested_dns_names(
    annotations: Mapping[str, str], spec: IssuerSpec
) -> tuple[str, ...] | PodDecision:
    """The DNS names a pod asks for through its volume's userAnnotations, or the denial:
    the annotations are the pod author's unverified words, so Signet reads exactly one
    documented key, only where the issuer opted in, and refuses anything else."""
    if not annotations:
        return ()
    unknown = sorted(k for k in annotations if k != POD_DNS_NAMES_ANNOTATION)
    if unknown:
        shown = ", ".join(repr(k[:64]) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return _deny(
            Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
            f"spec.unverifiedUserAnnotations {shown}: Signet's signers read only "
            f"{POD_DNS_NAMES_ANNOTATION!r}; remove the others from the podCertificate volume",
        )
    field = f"spec.unverifiedUserAnnotations[{POD_DNS_NAMES_ANNOTATION!r}]"
    if not spec.pod_certificates.dns_names_from_user_annotations:
        return _deny(
            Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
            f"{field}: {spec.ref} does not grant DNS names to pods: "
            "spec.podCertificates.dnsNamesFromUserAnnotations is not true",
        )
    names = tuple(n.strip() for n in annotations[POD_DNS_NAMES_ANNOTATION].split(","))
    if len(names) > MAX_DNS_NAMES:
        return _deny(
            Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
            f"{field} lists {len(names)} DNS names; at most {MAX_DNS_NAMES} are accepted",
        )
    for index, name in enumerate(names):
        try:
            validate_dns_name(name)
        except ValueError as error:
            return _deny(
                Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS,
                f"{field} item {index}: {error}; expected comma-separated DNS names",
            )
    if len(set(names)) != len(names):
        return _deny(Reason.INVALID_UNVERIFIED_USER_ANNOTATIONS, f"{field} lists a DNS name twice")
    return names


def begin_refresh_at(
    uid: str, not_before: datetime.datetime, not_after: datetime.datetime
) -> datetime.datetime:
    """About two thirds into the lifetime, earlier by a jitter that is stable per request,
    and always inside the window the apiserver accepts."""
    lifetime = not_after - not_before
    spread = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") / 2**32
    at = not_before + lifetime * REFRESH_FRACTION - lifetime * (JITTER_FRACTION * spread)
    at = at.replace(microsecond=0)
    return min(max(at, not_before + REFRESH_MARGIN), not_after - REFRESH_MARGIN)


def _deny(reason: Reason, message: str) -> PodDecision:
    return PodDecision(Action.DENY, reason, message)

"""The gates between a request for an identity and a KMS signature.

Every request path (a Certificate today; Kubernetes' own certificate requests next) passes
the same gates in the same order before a key is used: the issuer exists and is ready, it
serves the requester's namespace, its policy grants what is asked, and what is there to
overwrite may be overwritten. Each refusal names its reason and the field and rule at
fault. Pure: the caller looks up the issuer, the namespace's labels and the Secret first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from signet import policy
from signet.api.certificate import CertificateSpec
from signet.api.issuer import IssuerSpec
from signet.reasons import Reason
from signet.secretformat import layout
from signet.secretformat.summary import SecretSummary


class IssuerFacts(Protocol):
    """What the gates read of an issuer's resolved state."""

    @property
    def ready(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def spec(self) -> IssuerSpec | None: ...


@dataclass(frozen=True)
class Refusal:
    """Why no signature is made now. ``denied`` marks a policy decision (the metrics keep
    denials apart from failures)."""

    reason: Reason
    message: str
    denied: bool = False


def check_issuer(
    kind: str,
    name: str,
    namespace: str,
    issuer: IssuerFacts | None,
    *,
    namespace_labels: dict[str, str] | None,
) -> Refusal | None:
    """The gates every request path shares before its own policy: the issuer exists, is
    ready, and (a ClusterIssuer) its namespaceSelector selects the requester's namespace."""
    cluster_scoped = kind == "ClusterIssuer"
    where = "" if cluster_scoped else f" in namespace {namespace!r}"
    if issuer is None:
        return Refusal(Reason.ISSUER_NOT_FOUND, f"{kind} {name!r} not found{where}")
    if not issuer.ready or issuer.spec is None:
        return Refusal(
            Reason.ISSUER_NOT_READY,
            f"{kind} {name!r} is not ready: {issuer.reason}: {issuer.message}",
        )
    if cluster_scoped and (
        namespace_labels is None
        or not policy.namespace_selected(issuer.spec.namespace_selector, namespace_labels)
    ):
        return Refusal(
            Reason.NAMESPACE_NOT_ALLOWED,
            f"ClusterIssuer {name!r} does not serve namespace {namespace!r} "
            "(its namespaceSelector does not select it)",
        )
    return None


def check(
    spec: CertificateSpec,
    namespace: str,
    issuer: IssuerFacts | None,
    *,
    namespace_labels: dict[str, str] | None,
    secret: SecretSummary | None,
) -> Refusal | None:
    """None when every gate lets the request through. ``namespace_labels`` is consulted
    only for a ClusterIssuer (None: the namespace was not found)."""
    ref = spec.issuer_ref
    refusal = check_issuer(ref.kind, ref.name, namespace, issuer, namespace_labels=namespace_labels)
    if refusal is not None:
        return refusal
    assert issuer is not None and issuer.spec is not None
    denial = policy.check(spec, issuer.spec, namespace)
    if denial is not None:
        return Refusal(denial.reason, denial.message, denied=True)
    wanted = layout.SSH_TYPE if spec.ssh else layout.TLS_TYPE
    if secret is not None and secret.secret_type != wanted:
        return Refusal(
            Reason.SECRET_TYPE_CHANGED,
            f"Secret {spec.secret_name!r} has type {secret.secret_type}; a Secret's type "
            "cannot change: delete the Secret or choose another secretName",
        )
    return None

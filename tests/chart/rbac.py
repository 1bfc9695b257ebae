"""What the operator may do, as (apiGroup, resource, verb) triples: the single statement of
least privilege both the rendering tests and the `kubectl auth can-i` tests check against."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Permission = tuple[str, str, str]
NamedPermission = tuple[str, str, str, str]
"""(apiGroup, resource, verb, resourceName)."""


def triples(
    groups: Iterable[str], resources: Iterable[str], verbs: Iterable[str]
) -> set[Permission]:
    return {(g, r, v) for g in groups for r in resources for v in verbs}


READ = ("get", "list", "watch")
STATUS = ("get", "patch", "update")
PEERING = ("get", "list", "watch", "patch", "create")

CLUSTER_ALWAYS = (
    triples(["signet.dev"], ["clusterissuers"], READ)
    | triples(["signet.dev"], ["clusterissuers/status"], STATUS)
    | triples([""], ["namespaces"], READ)
    | triples(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"])
    | triples(
        ["certificates.k8s.io"],
        ["clustertrustbundles"],
        ("get", "list", "watch", "create", "update", "patch", "delete"),
    )
    | triples(["certificates.k8s.io"], ["certificatesigningrequests"], READ)
    | triples(["certificates.k8s.io"], ["certificatesigningrequests/status"], ["update"])
)
"""Cluster-wide in every mode (CertificateSigningRequests are cluster-scoped)."""

EVENTS = triples(["", "events.k8s.io"], ["events"], ["create", "patch"])

NAMESPACED = (
    triples(["signet.dev"], ["certificates", "issuers"], READ)
    | triples(["signet.dev"], ["certificates/status", "issuers/status"], STATUS)
    | triples([""], ["secrets"], ("get", "list", "watch", "create", "update", "patch"))
    | triples([""], ["configmaps"], ("get", "create", "update", "patch"))
    | triples(["certificates.k8s.io"], ["podcertificaterequests"], READ)
    | triples(["certificates.k8s.io"], ["podcertificaterequests/status"], ("update", "patch"))
    | triples(["cert-manager.io"], ["certificaterequests"], READ)
    | triples(["cert-manager.io"], ["certificaterequests/status"], ["update"])
    | EVENTS
)
"""Per served namespace (cluster-wide when watchNamespaces is empty)."""

HOME = triples([""], ["secrets"], ["get"]) | EVENTS
"""The release namespace when it is not served: ClusterIssuer CA Secrets and their events."""

SIGNER_NAMES = ("issuers.signet.dev/*", "clusterissuers.signet.dev/*")
SIGNERS: set[NamedPermission] = {
    ("certificates.k8s.io", "signers", verb, name)
    for verb in ("sign", "attest")
    for name in SIGNER_NAMES
}
"""Cluster-wide in every mode: answer PodCertificateRequests and CertificateSigningRequests,
attest ClusterTrustBundles, for Signet's own signer domains only."""
NOT_SIGNERS: set[NamedPermission] = {
    ("certificates.k8s.io", "signers", verb, name)
    for verb in ("sign", "attest", "approve")
    for name in ("kubernetes.io/*", "example.com/*", "issuers.signet.dev/ns.ca")
} | {
    (group, "signers", "approve", name)
    for group in ("certificates.k8s.io", "cert-manager.io")
    for name in SIGNER_NAMES
}
"""Signer grants Signet never has: other domains, approving (CSR approval stays with
Kubernetes RBAC and the cluster's approvers, a cert-manager CertificateRequest's with
cert-manager's), and a single signer's name, which RBAC matches literally (the apiserver's
signer check tries the name and then its ``<domain>/*`` wildcard)."""
CERT_MANAGER_APPROVER: set[NamedPermission] = {
    ("cert-manager.io", "signers", "approve", name) for name in SIGNER_NAMES
}
"""What the chart grants cert-manager's controller (not Signet): approving requests for
Signet's issuers, and nothing else."""

SHARDS = triples(["coordination.k8s.io"], ["leases"], ("list", "create", "patch", "delete"))
"""With sharding, in the release namespace only: each replica's own Lease (create, renew by
merge patch) and the members' (listed by label; deleted once abandoned for an hour)."""

CLUSTER_PEERING = triples(["kopf.dev"], ["clusterkopfpeerings"], PEERING)
NAMESPACED_PEERING = triples(["kopf.dev"], ["kopfpeerings"], PEERING)


def named_grants(rules: list[dict[str, Any]]) -> set[NamedPermission]:
    """The rules that name resources (only signers may), flattened."""
    found: set[NamedPermission] = set()
    for rule in rules:
        if "resourceNames" in rule:
            assert rule["resources"] == ["signers"], rule
            found |= {
                (g, r, v, n)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
                for n in rule["resourceNames"]
            }
    return found


def rule_triples(rules: list[dict[str, Any]]) -> set[Permission]:
    """Flatten a (Cluster)Role's rules without resource names (see `named_grants`);
    wildcards are refused outright."""
    found: set[Permission] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule, rule
        if "resourceNames" in rule:
            continue
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        found |= triples(rule["apiGroups"], rule["resources"], rule["verbs"])
    return found


__all__ = [
    "CERT_MANAGER_APPROVER",
    "CLUSTER_ALWAYS",
    "CLUSTER_PEERING",
    "EVENTS",
    "HOME",
    "NAMESPACED",
    "NAMESPACED_PEERING",
    "NOT_SIGNERS",
    "SHARDS",
    "SIGNERS",
    "NamedPermission",
    "Permission",
    "named_grants",
    "rule_triples",
    "triples",
]

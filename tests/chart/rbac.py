"""What the operator may do, as (apiGroup, resource, verb) triples: the single statement of
least privilege both the rendering tests and the `kubectl auth can-i` tests check against."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Permission = tuple[str, str, str]


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
)
"""Cluster-wide in every mode."""

EVENTS = triples(["", "events.k8s.io"], ["events"], ["create", "patch"])

NAMESPACED = (
    triples(["signet.dev"], ["certificates", "issuers"], READ)
    | triples(["signet.dev"], ["certificates/status", "issuers/status"], STATUS)
    | triples([""], ["secrets"], ("get", "list", "watch", "create", "update", "patch"))
    | triples([""], ["configmaps"], ("get", "create", "update", "patch"))
    | EVENTS
)
"""Per served namespace (cluster-wide when watchNamespaces is empty)."""

HOME = triples([""], ["secrets"], ["get"]) | EVENTS
"""The release namespace when it is not served: ClusterIssuer CA Secrets and their events."""

CLUSTER_PEERING = triples(["kopf.dev"], ["clusterkopfpeerings"], PEERING)
NAMESPACED_PEERING = triples(["kopf.dev"], ["kopfpeerings"], PEERING)


def rule_triples(rules: list[dict[str, Any]]) -> set[Permission]:
    """Flatten a (Cluster)Role's rules; wildcards are refused outright."""
    found: set[Permission] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        found |= triples(rule["apiGroups"], rule["resources"], rule["verbs"])
    return found


__all__ = [
    "CLUSTER_ALWAYS",
    "CLUSTER_PEERING",
    "EVENTS",
    "HOME",
    "NAMESPACED",
    "NAMESPACED_PEERING",
    "Permission",
    "rule_triples",
    "triples",
]

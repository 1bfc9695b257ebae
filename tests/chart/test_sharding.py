"""The chart with ``sharding.enabled``: the flags and pod name reach `signet run`, the Lease
Role is exactly what a shard member needs, and inconsistent values fail with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from signet.cli import build_parser
from tests.chart.helm import CHART, container_args, container_env, find, helm, one, render
from tests.chart.rbac import SHARDS, rule_triples

SHARDED = {"replicaCount": 3, "sharding": {"enabled": True}}


def test_sharding_renders_flags_pod_name_and_a_lease_role() -> None:
    manifests = render(SHARDED, namespace="signet-system")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    parsed = build_parser().parse_args(["run", *container_args(manifests)])
    assert parsed.shards == "auto"
    assert parsed.shard_lease_seconds == 15
    assert parsed.peering is None
    env = container_env(manifests)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    role = one(manifests, "Role", "sig-signet-shards")
    assert role["metadata"]["namespace"] == "signet-system"
    assert rule_triples(role["rules"]) == SHARDS
    binding = one(manifests, "RoleBinding", "sig-signet-shards")
    assert binding["metadata"]["namespace"] == "signet-system"
    assert binding["roleRef"]["name"] == "sig-signet-shards"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sig-signet", "namespace": "signet-system"}
    ]


def test_without_sharding_there_is_no_lease_access_and_no_flag() -> None:
    manifests = render({})
    assert find(manifests, "Role", "sig-signet-shards") == []
    assert not any(arg.startswith("--shard") for arg in container_args(manifests))
    assert "POD_NAME" not in container_env(manifests)


def test_lease_seconds_reach_the_flag() -> None:
    manifests = render({**SHARDED, "sharding": {"enabled": True, "leaseSeconds": 30}})
    assert "--shard-lease-seconds=30" in container_args(manifests)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 3}, "needs peering.enabled=true or sharding.enabled=true"),
        (
            {**SHARDED, "peering": {"enabled": True}},
            "peering.enabled and sharding.enabled exclude each other",
        ),
        (
            {**SHARDED, "audit": {"file": "/var/log/signet/audit.jsonl", "existingClaim": "pvc"}},
            "sharding with audit.existingClaim",
        ),
        ({"sharding": {"enabled": True, "leaseSeconds": 2}}, "/sharding/leaseSeconds"),
        ({"sharding": {"enabled": "yes"}}, "/sharding/enabled"),
    ],
)
def test_inconsistent_sharding_values_fail_with_a_reason(
    values: dict[str, Any], complaint: str
) -> None:
    result = helm("template", "sig", str(CHART), values=values, check=False)
    assert result.returncode != 0, f"accepted {values}"
    assert complaint in result.stderr, result.stderr

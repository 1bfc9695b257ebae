"""examples/clusterissuer-policy: selected namespaces get identities, others are refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.kube import Kube
from tests.operator.harness import condition, wait_condition, wait_issuer_ready

pytestmark = pytest.mark.cluster


def test_selected_namespace_is_served_and_unselected_refused(
    crds: Kube, apply_example: Callable[[str], str]
) -> None:
    apply_example("clusterissuer-policy")
    issuer = wait_issuer_ready(crds, None, "platform")

    granted = wait_condition(crds, "team-payments", "api")
    assert granted["status"]["spiffeID"] == "spiffe://platform.example.com/ns/team-payments/sa/api"
    secret = crds.core.read_namespaced_secret("api-svid", "team-payments")
    assert secret.metadata.annotations["signet.dev/issuer-kind"] == "ClusterIssuer"
    bundle = crds.core.read_namespaced_config_map(
        "signet-clusterissuer-platform-ca", "team-payments"
    )
    assert bundle.data["ca.crt"] == issuer["status"]["caBundle"]

    refused = wait_condition(crds, "sandbox", "api", status="False", reason="NamespaceNotAllowed")
    assert "does not serve namespace 'sandbox'" in condition(refused, "Ready")["message"]
    names = [s.metadata.name for s in crds.core.list_namespaced_secret("sandbox").items]
    assert "api-svid" not in names

"""A namespace gets only what its issuer's policy grants it, and is told exactly why not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from signet.api import GROUP, VERSION
from tests.kube import Kube, wait_event
from tests.operator.harness import (
    certificate_manifest,
    condition,
    in_namespace,
    issuer_manifest,
    wait_condition,
    wait_issuer_ready,
)

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("spec", "reason", "message"),
    [
        (
            {"x509": {"uris": ["spiffe://cluster.local/ns/kube-system/sa/admin"]}},
            "SPIFFEIDNotAllowed",
            "'spiffe://cluster.local/ns/kube-system/sa/admin' is not one of this namespace's "
            "identities",
        ),
        (
            {"x509": {"dnsNames": ["web.{ns}.svc", "payments.billing.svc"]}},
            "DNSNameNotAllowed",
            "spec.x509.dnsNames[1] 'payments.billing.svc' is not allowed: it matches none of "
            "policy.allowedDNSNames ['*.{ns}.svc', '*.{ns}.svc.cluster.local']",
        ),
        (
            {"x509": {"dnsNames": ["*.svc"]}},
            "DNSNameNotAllowed",
            "spec.x509.dnsNames[0] '*.svc' is not allowed",
        ),
        (
            {"ssh": {"type": "user", "principals": ["root"]}},
            "SSHPrincipalNotAllowed",
            "spec.ssh.principals[0] 'root' is not allowed: it matches none of "
            "policy.allowedSSHPrincipals ['{ns}-*']",
        ),
        (
            {"x509": {"ipAddresses": ["10.0.0.1"]}},
            "IPAddressNotAllowed",
            "spec.x509.ipAddresses[0] '10.0.0.1' is not allowed: "
            "policy.allowedIPRanges is empty, so none are granted",
        ),
        (
            {"duration": "4000h", "x509": {"dnsNames": ["a.{ns}.svc"]}},
            "DurationTooLong",
            "spec.duration 4000h exceeds policy.maxDuration 2160h of Issuer/{ns}/ca",
        ),
    ],
    ids=["foreign-spiffe", "foreign-dns", "wildcard-parent", "root-principal", "ip", "duration"],
)
def test_denials_name_the_value_and_the_rule(
    crds: Kube,
    namespace: str,
    issuer: dict[str, Any],
    spec: dict[str, Any],
    reason: str,
    message: str,
) -> None:
    spec = in_namespace(spec, namespace)
    crds.apply(certificate_manifest("thief", namespace, "ca", **spec))
    denied = wait_condition(crds, namespace, "thief", status="False", reason=reason)
    assert message.replace("{ns}", namespace) in condition(denied, "Ready")["message"]
    assert "thief-identity" not in [
        s.metadata.name for s in crds.core.list_namespaced_secret(namespace).items
    ]
    wait_event(crds, namespace, "thief", reason, type="Warning")


def test_issuer_ref_cannot_cross_namespaces(
    crds: Kube, namespace: str, make_issuer: Callable[..., dict[str, Any]]
) -> None:
    """Issuer refs carry no namespace: the name resolves in the Certificate's namespace only."""
    make_issuer("only-here")
    other = f"{namespace}-x"
    crds.core.create_namespace({"metadata": {"name": other}})
    try:
        crds.apply(certificate_manifest("web", other, "only-here"))
        denied = wait_condition(crds, other, "web", status="False", reason="IssuerNotFound")
        assert f"not found in namespace '{other}'" in condition(denied, "Ready")["message"]
        rejected = crds.apply(
            {
                **certificate_manifest("web2", other, "only-here"),
                "spec": {
                    "issuerRef": {"name": "only-here", "namespace": namespace},
                    "secretName": "x",
                    "x509": {"dnsNames": ["a.b.svc"]},
                },
            },
            check=False,
        )
        assert 'unknown field "spec.issuerRef.namespace"' in rejected.stderr
    finally:
        crds.core.delete_namespace(other)


def test_cluster_issuer_namespace_selector_and_policy(
    crds: Kube, namespace: str, kms_key_factory: Callable[..., str], signet_operator: Any
) -> None:
    name = f"corp-{namespace}"
    crds.apply(
        issuer_manifest(
            name,
            kms_key_factory("EC_SIGN_P384_SHA384"),
            namespaceSelector={"matchLabels": {"signet-test/team": namespace}},
            trustDomain="corp.example",
            policy={"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]},
        )
    )
    try:
        wait_issuer_ready(crds, None, name)
        manifest = certificate_manifest(
            "svc",
            namespace,
            name,
            x509={"spiffe": {"serviceAccount": "svc"}},
        )
        manifest["spec"]["issuerRef"]["kind"] = "ClusterIssuer"
        crds.apply(manifest)
        denied = wait_condition(
            crds, namespace, "svc", status="False", reason="NamespaceNotAllowed"
        )
        assert f"does not serve namespace '{namespace}'" in condition(denied, "Ready")["message"]
        crds.kubectl("label", "namespace", namespace, f"signet-test/team={namespace}")
        granted = wait_condition(crds, namespace, "svc", timeout=20)
        assert granted["status"]["spiffeID"] == f"spiffe://corp.example/ns/{namespace}/sa/svc"
        bundle = crds.core.read_namespaced_config_map(f"signet-clusterissuer-{name}-ca", namespace)
        assert "BEGIN CERTIFICATE" in bundle.data["ca.crt"]
    finally:
        crds.custom.delete_cluster_custom_object(GROUP, VERSION, "clusterissuers", name)

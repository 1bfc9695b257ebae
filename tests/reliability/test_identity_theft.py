"""A namespace trying to obtain another namespace's identity: its SPIFFE ID, its service
DNS names, its SSH principals, or a ClusterIssuer reserved for it. Nothing is granted (no
Secret, no signature), and every denial names the refused value and the rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from signet.kms.emulator import Counters
from tests.kube import Kube
from tests.operator.harness import (
    OperatorProcess,
    certificate_manifest,
    condition,
    issuer_manifest,
    wait_condition,
    wait_issuer_ready,
)
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import KeyFactory, audit_counts, delete_namespace

pytestmark = pytest.mark.cluster


@pytest.fixture
def victim(crds: Kube) -> Iterator[str]:
    name = f"t-victim-{uuid.uuid4().hex[:6]}"
    team = name
    crds.core.create_namespace({"metadata": {"name": name, "labels": {"signet-rel/team": team}}})
    yield name
    delete_namespace(crds, name)


@pytest.fixture
def reserved_clusterissuer(
    crds: Kube, victim: str, kms_key_factory: KeyFactory, signet_operator: OperatorProcess
) -> Iterator[str]:
    name = f"rel-{uuid.uuid4().hex[:6]}"
    crds.apply(
        issuer_manifest(
            name,
            kms_key_factory("EC_SIGN_P256_SHA256"),
            namespaceSelector={"matchLabels": {"signet-rel/team": victim}},
        )
    )
    wait_issuer_ready(crds, None, name)
    yield name
    crds.custom.delete_cluster_custom_object("signet.dev", "v1alpha1", "clusterissuers", name)


def _attempts(
    victim: str, attacker: str, cluster_issuer: str
) -> list[tuple[str, dict[str, Any], str, list[str]]]:
    """(name, spec fields, expected reason, substrings the message must contain)."""
    spiffe = f"spiffe://cluster.local/ns/{victim}/sa/default"
    return [
        (
            "steal-spiffe-uri",
            {"x509": {"uris": [spiffe]}},
            "SPIFFEIDNotAllowed",
            [repr(spiffe), f"spiffe://cluster.local/ns/{attacker}/sa/<serviceAccount>"],
        ),
        (
            "steal-spiffe-permissive-issuer",
            {"issuerRef": {"name": "permissive"}, "x509": {"uris": [spiffe]}},
            "SPIFFEIDNotAllowed",
            [repr(spiffe), "is not one of this namespace's identities"],
        ),
        (
            "steal-spiffe-traversal",
            {"x509": {"uris": [f"spiffe://cluster.local/ns/{attacker}/sa/../../{victim}/sa/x"]}},
            "SPIFFEIDNotAllowed",
            [f"/ns/{attacker}/sa/../../{victim}/sa/x"],
        ),
        (
            "steal-service-dns",
            {"x509": {"dnsNames": [f"web.{victim}.svc"]}},
            "DNSNameNotAllowed",
            [repr(f"web.{victim}.svc"), "policy.allowedDNSNames", f"*.{attacker}.svc"],
        ),
        (
            "steal-service-fqdn",
            {"x509": {"dnsNames": [f"web.{victim}.svc.cluster.local"]}},
            "DNSNameNotAllowed",
            [repr(f"web.{victim}.svc.cluster.local"), "policy.allowedDNSNames"],
        ),
        (
            "steal-service-cn",
            {"x509": {"commonName": f"web.{victim}.svc"}},
            "CommonNameNotAllowed",
            [repr(f"web.{victim}.svc"), "policy.allowedDNSNames"],
        ),
        (
            "steal-ssh-principal",
            {"ssh": {"type": "user", "principals": [f"{victim}-ops"]}},
            "SSHPrincipalNotAllowed",
            [repr(f"{victim}-ops"), "policy.allowedSSHPrincipals", f"{attacker}-*"],
        ),
        (
            "steal-ssh-host",
            {"ssh": {"type": "host", "principals": [f"{victim}-db"]}},
            "SSHPrincipalNotAllowed",
            [repr(f"{victim}-db"), "policy.allowedSSHPrincipals"],
        ),
        (
            "use-reserved-clusterissuer",
            {
                "issuerRef": {"name": cluster_issuer, "kind": "ClusterIssuer"},
                "x509": {"dnsNames": [f"web.{attacker}.svc"]},
            },
            "NamespaceNotAllowed",
            [repr(cluster_issuer), repr(attacker), "namespaceSelector"],
        ),
    ]


def test_identity_theft_denied(
    crds: Kube,
    namespace: str,
    victim: str,
    reserved_clusterissuer: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    attacker = namespace
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    crds.apply(issuer_manifest("ca", key_version, namespace=attacker))
    crds.apply(
        issuer_manifest(
            "permissive",
            key_version,
            namespace=attacker,
            policy={"allowedURIs": ["spiffe://cluster.local/**"]},
        )
    )
    wait_issuer_ready(crds, attacker, "ca")
    wait_issuer_ready(crds, attacker, "permissive")
    # the reserved ClusterIssuer does serve its own namespace: the denial below is the
    # selector at work, not a broken issuer
    crds.apply(
        certificate_manifest(
            "legit",
            victim,
            reserved_clusterissuer,
            issuerRef={"name": reserved_clusterissuer, "kind": "ClusterIssuer"},
        )
    )
    wait_condition(crds, victim, "legit")
    base = kms_counters.count("AsymmetricSign", key_version)

    attempts = _attempts(victim, attacker, reserved_clusterissuer)
    for name, fields, _, _ in attempts:
        body = certificate_manifest(name, attacker, "ca")
        body["spec"].pop("x509")
        body["spec"].update(fields)
        crds.apply(body)
    for name, _, reason, parts in attempts:
        obj = wait_condition(crds, attacker, name, status="False", reason=reason, timeout=30)
        message = condition(obj, "Ready")["message"]
        for part in parts:
            assert part in message, f"{name}: {part!r} not in {message!r}"
        with pytest.raises(kubernetes.client.ApiException) as missing:
            crds.core.read_namespaced_secret(f"{name}-identity", attacker)
        assert missing.value.status == 404, f"{name}: a Secret was created"
    assert kms_counters.count("AsymmetricSign", key_version) == base, "a theft attempt was signed"
    assert not audit_counts([signet_operator], attacker)
    record(
        f"identity theft: {len(attempts)} attempts on another namespace's identities",
        "0 granted, 0 signatures; each denial names the value and the rule",
        None,
    )

"""The chart as helm renders it: lint, schema, CRD copies, Deployment flags, RBAC rules.

No cluster needed; the cluster-side checks (server dry-run, install, `auth can-i`) live in
test_install.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from signet.cli import build_parser
from tests.chart.helm import (
    ALL_FEATURES,
    CHART,
    CHART_CRDS,
    CRD_SOURCES,
    container_args,
    container_env,
    find,
    helm,
    one,
    render,
)
from tests.chart.rbac import (
    CERT_MANAGER_APPROVER,
    CLUSTER_ALWAYS,
    CLUSTER_PEERING,
    HOME,
    NAMESPACED,
    NAMESPACED_PEERING,
    SIGNERS,
    named_grants,
    rule_triples,
)


def all_features(*namespaces: str) -> dict[str, Any]:
    values = copy.deepcopy(ALL_FEATURES)
    values["watchNamespaces"] = list(namespaces)
    return values


def test_chart_crd_files_are_byte_identical_copies_of_the_repository_crds() -> None:
    sources = sorted(p.name for p in CRD_SOURCES.glob("*.yaml"))
    copies = sorted(p.name for p in CHART_CRDS.glob("*.yaml"))
    assert "kopf-peering.yaml" in sources
    assert copies == sources, "run: cp crds/*.yaml charts/signet/files/crds/"
    for name in sources:
        assert (CHART_CRDS / name).read_bytes() == (CRD_SOURCES / name).read_bytes(), (
            f"charts/signet/files/crds/{name} differs from crds/{name}: "
            "run: cp crds/*.yaml charts/signet/files/crds/"
        )


@pytest.mark.parametrize(
    "values", [{}, all_features("team-a", "team-b")], ids=["defaults", "every-feature"]
)
def test_helm_lint_strict(values: dict[str, Any]) -> None:
    result = helm("lint", "--strict", str(CHART), values=values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "1"}, "/replicaCount"),
        ({"replicas": 1}, "additional properties 'replicas' not allowed"),
        ({"kms": {"emulator": "x:1"}}, "additional properties 'emulator' not allowed"),
        ({"peering": {"enabled": "yes"}}, "/peering/enabled"),
        ({"crds": {"keep": 1}}, "/crds/keep"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"kms": {"signQPS": 0}}, "/kms/signQPS"),
        ({"kms": {"emulatorAddress": "no-port"}}, "/kms/emulatorAddress"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"image": {"repository": "r", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"audit": {"file": "relative/audit.jsonl"}}, "/audit/file"),
        ({"serviceAccount": {"annotations": {"a": 1}}}, "/serviceAccount/annotations/a"),
        ({"hostNetwork": "true"}, "/hostNetwork"),
        ({"hostAliases": [{"hostnames": ["kms.internal"]}]}, "/hostAliases/0"),
        ({"hostAliases": [{"ip": "10.0.0.1", "hostnames": []}]}, "/hostAliases/0/hostnames"),
    ],
)
def test_values_schema_rejects(values: dict[str, Any], complaint: str) -> None:
    result = helm("template", "sig", str(CHART), values=values, check=False)
    assert result.returncode != 0, f"accepted {values}"
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2}, "replicaCount > 1 needs peering.enabled=true"),
        (
            {"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
            "set only one of minAvailable and maxUnavailable",
        ),
        ({"audit": {"existingClaim": "pvc"}}, "audit.existingClaim needs audit.file"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_inconsistent_values_fail_with_a_reason(values: dict[str, Any], complaint: str) -> None:
    result = helm("template", "sig", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def _source_crds() -> dict[str, dict[str, Any]]:
    crds: dict[str, dict[str, Any]] = {}
    for path in CRD_SOURCES.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                crds[doc["metadata"]["name"]] = doc
    return crds


def test_rendered_crds_are_the_sources_plus_keep_policy() -> None:
    sources = _source_crds()
    rendered = {
        crd["metadata"]["name"]: crd
        for crd in find(render({"peering": {"enabled": True}}), "CustomResourceDefinition")
    }
    assert (
        set(rendered)
        == set(sources)
        == {
            "certificates.signet.dev",
            "issuers.signet.dev",
            "clusterissuers.signet.dev",
            "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev",
        }
    )
    for name, crd in rendered.items():
        source = sources[name]
        assert crd["spec"] == source["spec"], f"{name}: spec changed by rendering"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert "namespace" not in crd["metadata"]


def test_crd_toggles() -> None:
    default_crds = find(render(), "CustomResourceDefinition")
    assert {c["spec"]["group"] for c in default_crds} == {"signet.dev"}, (
        "kopf peering CRDs only with peering.enabled"
    )
    unkept = find(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert len(unkept) == 3
    assert all("annotations" not in c["metadata"] for c in unkept)
    assert find(render({"crds": {"enabled": False}}), "CustomResourceDefinition") == []


def test_default_deployment_is_one_standalone_restricted_replica() -> None:
    manifests = render(namespace="signet-system")
    deployment = one(manifests, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "signet:0.1.0"
    assert container["command"] == ["signet", "run"]
    assert container_args(manifests) == [
        "--metrics-port=9402",
        "--health-port=8080",
        "--log-format=json",
    ]
    env = container_env(manifests)
    assert env == {
        "SIGNET_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "POD_ID": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    # Restricted Pod Security Standard.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Probes hit /healthz on the port the operator is told to serve it on.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-metrics": 9402, "http-health": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-health"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"tmp": "/tmp"}, "read-only root: only /tmp is writable"
    assert pod["serviceAccountName"] == "sig-signet"
    for field in ("hostNetwork", "dnsPolicy", "hostAliases"):
        assert field not in pod, f"{field} is the cluster's default unless asked for"

    service = one(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9402, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    for kind in ("ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget", "Role"):
        assert find(manifests, kind) == [], f"{kind} is off by default"


def test_every_feature_renders_into_flags_env_and_objects() -> None:
    manifests = render(all_features("team-a", "team-b"), namespace="signet-system")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert container_args(manifests) == [
        "--namespace=team-a",
        "--namespace=team-b",
        "--peering=signet",
        "--metrics-port=9402",
        "--health-port=8080",
        "--log-format=text",
        "--audit-log=/var/log/signet/audit.jsonl",
        "--max-concurrent-signs=8",
        "--max-concurrent-issuances=16",
        "--verbose",
    ]
    env = container_env(manifests)
    assert env["SIGNET_KMS_EMULATOR"] == "kms.signet-system:9000"
    assert env["SIGNET_KMS_SIGN_QPS"] == "2.5"
    assert env["EXTRA"] == "1"
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["audit"] == "/var/log/signet"
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "audit"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["hostAliases"] == ALL_FEATURES["hostAliases"]

    account = one(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "signet@p.iam.gserviceaccount.com"
    }
    service = one(manifests, "Service")
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["signet-system"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http-metrics"]

    policy = one(manifests, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["from"] == ALL_FEATURES["networkPolicy"]["metricsFrom"]
    assert policy["spec"]["egress"] == ALL_FEATURES["networkPolicy"]["egress"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = one(manifests, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in budget["spec"]


def test_host_network_keeps_cluster_dns() -> None:
    pod = one(render({"hostNetwork": True}), "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    # The operator reaches the API server as kubernetes.default.svc: the node's resolver
    # alone (the default for host-network pods) would not know that name.
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"


@pytest.mark.parametrize(
    "values", [{}, all_features("team-a", "team-b")], ids=["defaults", "every-feature"]
)
def test_rendered_command_line_is_accepted_by_signet_run(values: dict[str, Any]) -> None:
    """The flags the chart passes exist in the operator's own argument parser."""
    args = container_args(render(values))
    parsed = build_parser().parse_args(["run", *args])
    assert parsed.metrics_port == 9402
    assert parsed.health_port == 8080
    if values:
        assert parsed.namespace == ["team-a", "team-b"]
        assert parsed.peering == "signet"
        assert parsed.log_format == "text"
        assert parsed.max_concurrent_signs == 8
        assert parsed.max_concurrent_issuances == 16
    else:
        assert parsed.namespace == []  # every namespace
        assert parsed.peering is None
        assert parsed.log_format == "json"


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "peering"])
def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(peering: bool) -> None:
    manifests = render({"peering": {"enabled": peering}, "replicaCount": 1})
    role = one(manifests, "ClusterRole", "sig-signet")
    expected = CLUSTER_ALWAYS | NAMESPACED | (CLUSTER_PEERING if peering else set())
    assert rule_triples(role["rules"]) == expected
    assert named_grants(role["rules"]) == SIGNERS
    assert find(manifests, "Role") == [] and find(manifests, "RoleBinding") == []
    binding = one(manifests, "ClusterRoleBinding", "sig-signet")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sig-signet", "namespace": "signet-system"}
    ]


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "peering"])
def test_watch_namespaces_rbac_keeps_only_cluster_scoped_rules_cluster_wide(
    peering: bool,
) -> None:
    manifests = render(
        {"watchNamespaces": ["team-a", "team-b"], "peering": {"enabled": peering}},
        namespace="signet-system",
    )
    assert rule_triples(one(manifests, "ClusterRole", "sig-signet")["rules"]) == CLUSTER_ALWAYS
    assert named_grants(one(manifests, "ClusterRole", "sig-signet")["rules"]) == SIGNERS
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(manifests, "Role")
    }
    assert set(roles) == {
        ("team-a", "sig-signet"),
        ("team-b", "sig-signet"),
        ("signet-system", "sig-signet-home"),
    }
    for namespace in ("team-a", "team-b"):
        expected = NAMESPACED | (NAMESPACED_PEERING if peering else set())
        assert rule_triples(roles[namespace, "sig-signet"]["rules"]) == expected
    assert rule_triples(roles["signet-system", "sig-signet-home"]["rules"]) == HOME
    bindings = find(manifests, "RoleBinding")
    assert {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings} == set(roles)

    served_home = render({"watchNamespaces": ["signet-system"]}, namespace="signet-system")
    assert [r["metadata"]["name"] for r in find(served_home, "Role")] == ["sig-signet"], (
        "no separate home Role when the release namespace is served"
    )


def test_cert_manager_s_controller_may_approve_requests_for_signet_issuers_only() -> None:
    approver = "sig-signet-cert-manager-controller-approve:signet-dev"
    manifests = render({"certManager": {"approver": {"serviceAccount": {"namespace": "cm"}}}})
    role = one(manifests, "ClusterRole", approver)
    assert named_grants(role["rules"]) == CERT_MANAGER_APPROVER
    assert rule_triples(role["rules"]) == set()
    binding = one(manifests, "ClusterRoleBinding", approver)
    assert binding["roleRef"]["name"] == approver
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cm"}
    ]
    off = render({"certManager": {"approver": {"enabled": False}}})
    assert (
        find(off, "ClusterRole", approver) == [] and find(off, "ClusterRoleBinding", approver) == []
    )


def test_rbac_and_service_account_can_be_brought_by_the_user() -> None:
    manifests = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "x"}}
    )
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
        assert find(manifests, kind) == []
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "x"

"""The chart against the real apiserver: server-side dry run of everything it renders, then
install, least-privilege proof with the ServiceAccount's own token, upgrade and uninstall.

There is no kubelet or scheduler: pods never run, so these tests assert on API objects and on
what the API server authorizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import ALL_FEATURES, CHART, Manifest, helm, one, render
from tests.chart.rbac import (
    CLUSTER_ALWAYS,
    CLUSTER_PEERING,
    HOME,
    NAMESPACED,
    NAMESPACED_PEERING,
    NOT_SIGNERS,
    SIGNERS,
    NamedPermission,
    Permission,
    triples,
)
from tests.kube import Kube, eventually

pytestmark = pytest.mark.cluster

SIGNET_CRDS = ("certificates.signet.dev", "issuers.signet.dev", "clusterissuers.signet.dev")
PEERING_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
CLUSTER_SCOPED = {
    "namespaces",
    "customresourcedefinitions",
    "clusterissuers",
    "clusterkopfpeerings",
    "clustertrustbundles",
    "certificatesigningrequests",
}

DENIED_ELSEWHERE: set[Permission] = (
    triples([""], ["pods", "serviceaccounts", "services", "nodes"], ("get", "list", "create"))
    | triples(["apps"], ["deployments"], ("get", "list", "patch"))
    | triples(
        ["rbac.authorization.k8s.io"], ["clusterroles", "roles"], ("create", "bind", "escalate")
    )
    | triples(["rbac.authorization.k8s.io"], ["clusterrolebindings", "rolebindings"], ["create"])
    | triples([""], ["users", "groups", "serviceaccounts"], ["impersonate"])
    | triples([""], ["serviceaccounts/token"], ["create"])
    | triples(["coordination.k8s.io"], ["leases"], ("get", "create"))
)
"""Things the operator never needs, whatever the values."""


@dataclass(frozen=True)
class Check:
    permission: Permission
    namespace: str | None  # None: cluster-wide (kubectl --all-namespaces)
    allowed: bool

    def argv(self) -> list[str]:
        group, resource, verb = self.permission
        base, _, subresource = resource.partition("/")
        target = f"{base}.{group}" if group else base
        argv = ["auth", "can-i", verb, target]
        if subresource:
            argv.append(f"--subresource={subresource}")
        argv += ["-n", self.namespace] if self.namespace else ["--all-namespaces"]
        return argv


def matrix(
    granted: set[Permission], namespace: str | None, *, denied_extra: set[Permission] | None = None
) -> list[Check]:
    """Every granted triple must be allowed; every other standard verb on the same resources,
    and everything in ``denied_extra``, must be denied."""
    checks = [Check(p, namespace, True) for p in sorted(granted)]
    resources = {(group, resource) for group, resource, _ in granted}
    for group, resource in sorted(resources):
        for verb in VERBS:
            if (group, resource, verb) not in granted:
                checks.append(Check((group, resource, verb), namespace, False))
    checks += [Check(p, namespace, False) for p in sorted((denied_extra or set()) - granted)]
    return checks


def scoped(permissions: set[Permission], *, cluster: bool) -> set[Permission]:
    return {p for p in permissions if (p[1].split("/")[0] in CLUSTER_SCOPED) == cluster}


def run_checks(kube: Kube, kubeconfig: Path, checks: list[Check]) -> None:
    """`kubectl auth can-i` with the ServiceAccount's token for every check; one report."""

    def ask(check: Check) -> str | None:
        group, resource, verb = check.permission
        if group in NOT_SERVED:
            base, _, subresource = resource.partition("/")
            allowed = review(
                kube, kubeconfig, group=group, resource=base, subresource=subresource,
                verb=verb, namespace=check.namespace or "",
            )  # fmt: skip
            if allowed != check.allowed:
                return f"{' '.join(check.argv())}: {allowed=}, expected {check.allowed}"
            return None
        result = kube.kubectl(*check.argv(), kubeconfig_path=kubeconfig, check=False)
        answer = result.stdout.strip()
        if answer not in ("yes", "no"):
            return f"{' '.join(check.argv())}: unexpected {answer!r} {result.stderr.strip()}"
        if (answer == "yes") != check.allowed:
            return (
                f"{' '.join(check.argv())}: {answer}, expected {'yes' if check.allowed else 'no'}"
            )
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = [f for f in pool.map(ask, checks) if f]
    assert not failures, "\n".join(failures)


NOT_SERVED = {"cert-manager.io"}
"""Groups whose CRDs the test apiserver lacks (the cert-manager tests install them only for
themselves): `kubectl auth can-i` cannot resolve their resources, so they are asked with a
SelfSubjectAccessReview."""


def review(kube: Kube, kubeconfig: Path, **attributes: str) -> bool:
    """A SelfSubjectAccessReview of ``attributes`` (group, resource, verb, ...)."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}},
    }
    result = kube.kubectl(
        "create", "--validate=false", "-f", "-", "-o", "json",
        input=json.dumps(body),
        kubeconfig_path=kubeconfig,
    )  # fmt: skip
    return bool(json.loads(result.stdout)["status"].get("allowed"))


def check_signers(kube: Kube, kubeconfig: Path) -> None:
    """Signer grants, asked with SelfSubjectAccessReviews: `kubectl auth can-i` cannot name
    a resource whose name has slashes, as signer names do."""

    def allowed(permission: NamedPermission) -> bool:
        group, resource, verb, name = permission
        return review(kube, kubeconfig, group=group, resource=resource, verb=verb, name=name)

    wrong = [f"{p}: no, expected yes" for p in sorted(SIGNERS) if not allowed(p)]
    wrong += [f"{p}: yes, expected no" for p in sorted(NOT_SIGNERS) if allowed(p)]
    assert not wrong, "\n".join(wrong)


def wait_until_authorized(kube: Kube, kubeconfig: Path, check: Check) -> None:
    """RBAC changes reach the authorizer through an informer: wait for one grant to land."""

    def answered_as_expected() -> bool:
        result = kube.kubectl(*check.argv(), kubeconfig_path=kubeconfig, check=False)
        return (result.stdout.strip() == "yes") == check.allowed

    eventually(answered_as_expected, timeout=15, what=f"RBAC: {check}")


def get_json(kube: Kube, *args: str, check: bool = True) -> dict[str, Any] | None:
    result = kube.kubectl("get", *args, "-o", "json", check=check)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_every_rendered_object_passes_server_side_dry_run_under_restricted_pss(
    kube: Kube, namespace: str, other_namespace: str
) -> None:
    kube.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    values = {**ALL_FEATURES, "watchNamespaces": [namespace, other_namespace]}
    manifests = render(values, namespace=namespace)
    served = kube.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name")
    for kind, resource in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        if f"{resource}.monitoring.coreos.com" not in served.stdout.split():
            # No prometheus-operator here; test_render and test_prometheus_rules check
            # their wiring, and against a cluster that has it (SIGNET_TEST_KUBECONFIG)
            # they are dry-run too.
            monitoring = one(manifests, kind)
            manifests = [m for m in manifests if m is not monitoring]
    kinds = {m["kind"] for m in manifests}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    result = kube.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(manifests)
    )
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(manifests), result.stdout
    assert "PodSecurity" not in result.stderr, result.stderr

    # The same namespace does warn about a pod template that is not restricted, so the
    # silence above means something.
    deployment = one(manifests, "Deployment")
    loose: Manifest = json.loads(json.dumps(deployment))
    loose["metadata"]["name"] = "loose"
    container = loose["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"allowPrivilegeEscalation": True}
    warned = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(loose))
    assert 'would violate PodSecurity "restricted' in warned.stderr, warned.stderr


@pytest.fixture
def release(kube: Kube, namespace: str, release_name: str) -> Iterator[str]:
    """A release name in ``namespace``, uninstalled afterwards if the test left it installed."""
    yield release_name
    helm("uninstall", release_name, "-n", namespace, kubeconfig=kube.kubeconfig, check=False)


def test_install_grants_least_privilege_then_upgrade_and_uninstall(
    kube: Kube, namespace: str, other_namespace: str, release: str, tmp_path: Path
) -> None:
    fullname = f"{release}-signet"
    gsa = "signet@project.iam.gserviceaccount.com"
    # --take-ownership: the CRDs are cluster-wide and may already exist (from the suite's
    # `crds` fixture or an earlier release); a kept CRD is adopted the same way in real life.
    helm(
        "install", release, str(CHART), "-n", namespace, "--take-ownership",
        values={"serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": gsa}}},
        kubeconfig=kube.kubeconfig,
    )  # fmt: skip

    for name in SIGNET_CRDS:
        crd = get_json(kube, "crd", name)
        assert crd is not None
        annotations = crd["metadata"]["annotations"]
        assert annotations["meta.helm.sh/release-name"] == release
        assert annotations["helm.sh/resource-policy"] == "keep"
        kube.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")
    account = get_json(kube, "serviceaccount", fullname, "-n", namespace)
    assert account is not None
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == gsa
    deployment = get_json(kube, "deployment", fullname, "-n", namespace)
    assert deployment is not None
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    service = get_json(kube, "service", f"{fullname}-metrics", "-n", namespace)
    assert service is not None
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http-metrics", 9402)]
    assert get_json(kube, "clusterrolebinding", fullname) is not None

    # What a pod running as the ServiceAccount may do: exactly the needed verbs, anywhere.
    token = kube.service_account_kubeconfig(namespace, fullname, tmp_path)
    wait_until_authorized(kube, token, Check(("", "secrets", "get"), other_namespace, True))
    everything = CLUSTER_ALWAYS | NAMESPACED
    run_checks(
        kube,
        token,
        matrix(scoped(everything, cluster=False), other_namespace, denied_extra=DENIED_ELSEWHERE)
        + matrix(scoped(everything, cluster=True), None, denied_extra=CLUSTER_PEERING)
        + [Check(("", "secrets", "list"), None, True), Check(("", "pods", "list"), None, False)],
    )
    check_signers(kube, token)

    # Upgrade: serve one namespace only, with peering and two replicas.
    helm(
        "upgrade", release, str(CHART), "-n", namespace, "--take-ownership",
        values={
            "watchNamespaces": [other_namespace],
            "peering": {"enabled": True},
            "replicaCount": 2,
            "logFormat": "text",
        },
        kubeconfig=kube.kubeconfig,
    )  # fmt: skip
    deployment = get_json(kube, "deployment", fullname, "-n", namespace)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == [f"--namespace={other_namespace}", "--peering=signet"]
    assert "--log-format=text" in args
    for name in PEERING_CRDS:
        crd = get_json(kube, "crd", name)
        assert crd is not None
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    wait_until_authorized(kube, token, Check(("", "secrets", "list"), None, False))
    unwatched = "default"
    run_checks(
        kube,
        token,
        # Served namespace: the namespaced rules plus kopf's namespaced peering.
        matrix(NAMESPACED | NAMESPACED_PEERING, other_namespace, denied_extra=DENIED_ELSEWHERE)
        # Cluster-wide: only ClusterIssuers, namespaces and CRDs remain.
        + matrix(CLUSTER_ALWAYS, None, denied_extra=CLUSTER_PEERING)
        + [Check(p, None, False) for p in NAMESPACED]
        # A namespace that is not served: nothing at all.
        + [Check(p, unwatched, False) for p in NAMESPACED | NAMESPACED_PEERING]
        # The release namespace (not served): read CA Secrets by name, post events.
        + matrix(HOME, namespace)
        + [Check(("", "configmaps", "get"), namespace, False)],
    )
    check_signers(kube, token)

    helm("uninstall", release, "-n", namespace, kubeconfig=kube.kubeconfig)
    for name in (*SIGNET_CRDS, *PEERING_CRDS):
        assert get_json(kube, "crd", name) is not None, f"crds.keep=true but {name} is gone"
    assert get_json(kube, "clusterrole", fullname, check=False) is None
    assert get_json(kube, "clusterrolebinding", fullname, check=False) is None
    assert get_json(kube, "role", fullname, "-n", other_namespace, check=False) is None
    assert get_json(kube, "serviceaccount", fullname, "-n", namespace, check=False) is None

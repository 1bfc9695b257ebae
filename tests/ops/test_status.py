"""`signet status` against the real operator: Ready and failing objects, scopes, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import Kube
from tests.operator.harness import certificate_manifest, condition, wait_condition
from tests.ops.cli import signet

pytestmark = pytest.mark.cluster


def _row(output: str, first: str) -> list[str]:
    rows = [line.split() for line in output.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, output
    return rows[0]


def test_status_lists_certificates_and_issuers_and_explains_failures(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    crds.apply(certificate_manifest("web", namespace, "ca"))
    crds.apply(certificate_manifest("orphan", namespace, "missing"))
    web = wait_condition(crds, namespace, "web")
    orphan = wait_condition(crds, namespace, "orphan", status="False", reason="IssuerNotFound")

    result = signet("status", "-n", namespace, kubeconfig=crds.kubeconfig)

    assert result.code == 0, result.err
    assert result.out.splitlines()[0].split()[:3] == ["CERTIFICATE", "READY", "REASON"]
    assert _row(result.out, "web") == [
        "web",
        "True",
        condition(web, "Ready")["reason"],
        "x509",
        "web-identity",
        "ca",
        web["status"]["notAfter"],
        web["status"]["renewalTime"],
    ]
    assert _row(result.out, "orphan") == [
        "orphan", "False", "IssuerNotFound", "x509", "orphan-identity", "missing",
    ]  # fmt: skip
    assert _row(result.out, namespace) == [
        namespace,
        "Issuer",
        "ca",
        "True",
        condition(issuer, "Ready")["reason"],
        issuer["status"]["keyAlgorithm"],
        issuer["spec"]["kms"]["cloudKMS"]["keyVersion"],
        "Stable",
    ]
    not_ready = result.out.split("Not ready:")[1].strip().splitlines()
    assert not_ready == [f"Certificate {namespace}/orphan: {condition(orphan, 'Ready')['message']}"]


def test_all_namespaces_adds_the_namespace_column(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    crds.apply(certificate_manifest("api", namespace, "ca"))
    wait_condition(crds, namespace, "api")
    result = signet("status", "-A", kubeconfig=crds.kubeconfig)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].split()[:2] == ["NAMESPACE", "CERTIFICATE"]
    rows = [line.split() for line in result.out.splitlines()]
    assert [namespace, "api", "True"] in [row[:3] for row in rows]


def test_namespace_defaults_to_the_kubeconfig_context(
    crds: Kube, namespace: str, issuer: dict[str, Any], tmp_path: Path
) -> None:
    crds.apply(certificate_manifest("ctx", namespace, "ca"))
    wait_condition(crds, namespace, "ctx")
    config = yaml.safe_load(crds.kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = namespace
    scoped = tmp_path / "kubeconfig"
    scoped.write_text(yaml.safe_dump(config))
    result = signet("status", kubeconfig=scoped)
    assert result.code == 0, result.err
    assert _row(result.out, "ctx")[:2] == ["ctx", "True"]


def test_empty_namespace_and_bad_kubeconfig(crds: Kube, namespace: str, tmp_path: Path) -> None:
    result = signet("status", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert result.code == 0
    assert f"No Certificates in namespace {namespace}." in result.out

    missing = signet("status", kubeconfig=tmp_path / "nope")
    assert missing.code == 1
    assert missing.err.startswith(f"error: cannot load kubeconfig {tmp_path / 'nope'}")

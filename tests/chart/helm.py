"""Running the real helm binary against the chart, and reading what it renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import ROOT

CHART = ROOT / "charts" / "signet"
CRD_SOURCES = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"

Manifest = dict[str, Any]


def helm_binary() -> str | None:
    built = ROOT / ".tools" / "bin" / "helm"
    if built.exists():
        return str(built)
    return shutil.which("helm")


def _helm_env() -> dict[str, str]:
    """Keep helm's cache, config and data out of the user's home."""
    home = Path(tempfile.gettempdir()) / f"signet-helm-{os.getuid()}"
    env = dict(os.environ)
    for name in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{name}_HOME"] = str(home / name.lower())
    return env


def helm(
    *args: str,
    values: dict[str, Any] | None = None,
    kubeconfig: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run helm; ``values`` go in as a values file on stdin (``-f -``)."""
    binary = helm_binary()
    if binary is None:
        pytest.skip("helm not built: run `make tools`")
    command = [binary, *args]
    if values is not None:
        command += ["-f", "-"]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(
        command,
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env=_helm_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def render(
    values: dict[str, Any] | None = None, *, namespace: str = "signet-system", release: str = "sig"
) -> list[Manifest]:
    """Every object `helm template` renders for these values."""
    result = helm("template", release, str(CHART), "--namespace", namespace, values=values or {})
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container_args(manifests: list[Manifest]) -> list[str]:
    deployment = one(manifests, "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def container_env(manifests: list[Manifest]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in env}


ALL_FEATURES: dict[str, Any] = {
    "replicaCount": 2,
    "peering": {"enabled": True, "name": "signet"},
    "serviceAccount": {
        "annotations": {"iam.gke.io/gcp-service-account": "signet@p.iam.gserviceaccount.com"}
    },
    "kms": {"emulatorAddress": "kms.signet-system:9000", "signQPS": 2.5, "maxConcurrentSigns": 8},
    "maxConcurrentIssuances": 16,
    "logFormat": "text",
    "audit": {"file": "/var/log/signet/audit.jsonl"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Signet"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
    },
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
    "extraArgs": ["--verbose"],
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "hostAliases": [{"ip": "199.36.153.8", "hostnames": ["cloudkms.googleapis.com"]}],
    "podAnnotations": {"example.com/a": "b"},
    "priorityClassName": "system-cluster-critical",
}
"""Values switching every optional feature on (watchNamespaces is added per test), except
``hostNetwork``: the restricted Pod Security Standard the install tests hold the chart to
forbids it (test_render checks it on its own)."""


__all__ = [
    "ALL_FEATURES",
    "CHART",
    "CHART_CRDS",
    "CRD_SOURCES",
    "Manifest",
    "container_args",
    "container_env",
    "find",
    "helm",
    "helm_binary",
    "one",
    "render",
]

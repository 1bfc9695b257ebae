"""Fixtures every test directory shares: the cluster, CRDs, a namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from signet_dev import LocalControlPlane
from tests.kube import ROOT, Kube

pytest_plugins = ["tests.kms_fixtures", "tests.operator_fixtures", "tests.faultproxy"]

CRD_NAMES = ("certificates.signet.dev", "issuers.signet.dev", "clusterissuers.signet.dev")


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    """The cluster under test: ``SIGNET_TEST_KUBECONFIG`` if set, else a local control plane
    started for this session and torn down at its end, even after failures."""
    existing = os.environ.get("SIGNET_TEST_KUBECONFIG")
    if existing:
        yield Kube(Path(existing), plane=None)
        return
    with LocalControlPlane() as plane:
        yield Kube(plane.kubeconfig, plane=plane)


@pytest.fixture(scope="session")
def crds(kube: Kube) -> Kube:
    """Signet's CRDs applied (server-side) and Established."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for name in CRD_NAMES:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return kube


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    yield name
    kube.core.delete_namespace(name)

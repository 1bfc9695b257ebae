"""Fixtures every test directory shares: the cluster, CRDs, a namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from signet_dev import LocalControlPlane
from tests.kube import Kube

pytest_plugins = [
    "tests.kms_fixtures",
    "tests.operator_fixtures",
    "tests.faultproxy",
    "tests.softhsm",
]


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
    kube.apply_crds()
    return kube


def _fresh_namespace(kube: Kube) -> Iterator[str]:
    """A namespace of its own, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    yield name
    kube.core.delete_namespace(name)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test."""
    yield from _fresh_namespace(kube)


@pytest.fixture
def other_namespace(kube: Kube) -> Iterator[str]:
    """A second fresh namespace (watched namespaces, cross-namespace denials)."""
    yield from _fresh_namespace(kube)

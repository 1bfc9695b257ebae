"""Fixtures of the chart tests (helm itself is found by tests.chart.helm)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.kube import Kube


@pytest.fixture
def other_namespace(kube: Kube) -> Iterator[str]:
    """A second fresh namespace (watched namespaces, cross-namespace denials)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    yield name
    kube.core.delete_namespace(name)


@pytest.fixture
def release_name() -> str:
    return f"sig-{uuid.uuid4().hex[:8]}"

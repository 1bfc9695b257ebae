"""Fixtures of the PodCertificateRequest tests: a Node object no kubelet serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube import Kube
from tests.podcerts.requests import create_node


@pytest.fixture
def node(crds: Kube) -> Iterator[dict[str, Any]]:
    body = create_node(crds)
    yield body
    crds.core.delete_node(body["metadata"]["name"])

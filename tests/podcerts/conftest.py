"""Fixtures of the PodCertificateRequest tests (a Node object no kubelet serves) and of the
CertificateSigningRequest tests (requesters allowed to create them, cleanup)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube import Kube
from tests.podcerts.csrs import allow_requesters
from tests.podcerts.requests import create_node


@pytest.fixture
def node(crds: Kube) -> Iterator[dict[str, Any]]:
    body = create_node(crds)
    yield body
    crds.core.delete_node(body["metadata"]["name"])


@pytest.fixture(scope="session")
def csr_requesters(crds: Kube) -> Iterator[str]:
    """The group the CSR tests' requesters are in may create CertificateSigningRequests."""
    name = allow_requesters(crds)
    yield name
    crds.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found")


@pytest.fixture
def csr_names(crds: Kube) -> Iterator[list[str]]:
    """Names of the CertificateSigningRequests a test created (cluster-scoped: deleted
    afterwards)."""
    names: list[str] = []
    yield names
    if names:
        crds.kubectl("delete", "csr", *names, "--ignore-not-found", "--wait=false")

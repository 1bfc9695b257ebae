"""The node tests' fixtures: the session's real kubelet node, started on first use.

Starting it lazily keeps `pytest -m "not node"` and unit-only runs free of root, containerd
and the kubelet. A machine that cannot run it skips these tests with the reason; CI sets
``SIGNET_REQUIRE_NODE=1`` so that a missing node fails instead of hiding behind a skip.
"""

from __future__ import annotations

import os

import pytest

from signet_dev.node import LocalNode, unavailable_reason
from tests.kube import Kube


@pytest.fixture(scope="session")
def node(kube: Kube) -> LocalNode:
    """The local control plane's node (kubelet + containerd), Ready, shared by the session
    (one kubelet per machine) and torn down with the control plane."""
    reason = (
        "SIGNET_TEST_KUBECONFIG names another cluster; node tests run on the local test bed"
        if kube.plane is None
        else unavailable_reason()
    )
    if reason:
        if os.environ.get("SIGNET_REQUIRE_NODE") == "1":
            pytest.fail(f"SIGNET_REQUIRE_NODE=1 but no node can run here: {reason}")
        pytest.skip(f"no kubelet node: {reason}")
    assert kube.plane is not None
    return kube.plane.start_node()

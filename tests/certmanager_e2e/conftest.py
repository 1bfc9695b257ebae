"""The real cert-manager controller (tools/go/certmanager, built by `make tools`) running
against the test apiserver with cert-manager's own CRDs.

One controller per module, started after the session's Signet operator so that the operator
picks cert-manager's CRDs up without a restart; the CRDs are removed at the end of the
module (with every cert-manager object), so other tests see an apiserver without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from signet_dev import certmanager
from tests.kube import Kube, eventually
from tests.operator.harness import OperatorProcess


def _installed(kube: Kube) -> bool:
    result = kube.kubectl(
        "get", "crd", certmanager.CRD_NAMES[0], "--ignore-not-found", "-o", "name"
    )
    return bool(result.stdout.strip())


@pytest.fixture(scope="module")
def cert_manager_controller(
    crds: Kube, signet_operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[certmanager.CertManagerController]:
    """cert-manager's CRDs and its controller, ready (informers synced). Signet's operator
    is started first: it must pick the CRDs up as they appear, not find them at start."""
    if not certmanager.available():
        pytest.fail(f"{certmanager.binary()} or {certmanager.CRDS} missing: run `make tools`")
    certmanager.install_crds(crds)
    folder: Path = tmp_path_factory.mktemp("cert-manager")
    controller = certmanager.CertManagerController(crds.kubeconfig, folder)
    try:
        with controller:
            yield controller
    finally:
        certmanager.remove_crds(crds)
        eventually(lambda: not _installed(crds), timeout=120, what="cert-manager CRDs removed")

"""cert-manager's CRDs, installed only for the tests that ask for them.

The CRDs are cert-manager's own (its Go module's ``deploy/crds/``, copied by `make tools`;
`signet_dev.certmanager` installs and removes them); no cert-manager controller runs here
(tests/certmanager_e2e runs the real one). Tests play cert-manager: they create
CertificateRequests with a PKCS#10, an issuerRef and an owner, and write the Approved or
Denied condition through /status as cert-manager's approver does. The CRDs are installed
after the session's operator has started and removed at the end of the module, so the
operator proves it picks them up without a restart, and every other test sees an apiserver
without them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from signet_dev import certmanager
from tests.kube import Kube, eventually
from tests.operator.harness import OperatorProcess


def installed(kube: Kube) -> bool:
    result = kube.kubectl(
        "get", "crd", certmanager.CRD_NAMES[0], "--ignore-not-found", "-o", "name"
    )
    return bool(result.stdout.strip())


@pytest.fixture(scope="module")
def cert_manager(crds: Kube, signet_operator: OperatorProcess) -> Iterator[Kube]:
    """cert-manager's CRDs applied and Established while the module runs."""
    if not certmanager.CRDS.is_dir():
        pytest.fail(f"{certmanager.CRDS} is missing: run `make tools`")
    certmanager.install_crds(crds)
    yield crds
    certmanager.remove_crds(crds)
    eventually(lambda: not installed(crds), timeout=120, what="cert-manager CRDs removed")

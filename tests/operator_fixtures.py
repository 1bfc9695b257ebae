"""Operator fixtures shared by every test directory (a plugin loaded by the root conftest).

One operator process per session: a fixture defined in several directories' conftests
would start one per directory, and two operators would both sign every Certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube import Kube
from tests.operator.harness import OperatorProcess, issuer_manifest, wait_issuer_ready


@pytest.fixture(scope="session")
def operator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator")


@pytest.fixture(scope="session")
def signet_operator(crds: Kube, kms_emulator: Any, operator_dir: Path) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session (tests that restart it leave it running)."""
    operator = OperatorProcess(crds.kubeconfig, kms_emulator.address, operator_dir)
    operator.start()
    yield operator
    operator.stop()


@pytest.fixture
def make_issuer(
    crds: Kube,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
    namespace: str,
) -> Callable[..., dict[str, Any]]:
    """Create a Ready Issuer in the test namespace backed by a KMS key of ``algorithm``."""

    def make(
        name: str = "ca", algorithm: str = "EC_SIGN_P256_SHA256", **spec: Any
    ) -> dict[str, Any]:
        key_version = kms_key_factory(algorithm)
        crds.apply(issuer_manifest(name, key_version, namespace=namespace, **spec))
        return wait_issuer_ready(crds, namespace, name)

    return make


@pytest.fixture
def issuer(make_issuer: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return make_issuer()


@pytest.fixture
def fresh_issuer(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
) -> Callable[..., dict[str, Any]]:
    """A Ready Issuer in the test namespace on a KMS key of its own, so that the key's
    signature count is this test's alone."""

    def make(name: str, **spec: Any) -> dict[str, Any]:
        key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
        crds.apply(issuer_manifest(name, key_version, namespace=namespace, **spec))
        return wait_issuer_ready(crds, namespace, name)

    return make

"""Fixtures for the examples: the operator, the emulator key the examples name, and an
``apply_example`` that applies a directory exactly as the README says and cleans up after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from signet.kms.emulator import EmulatorServer
from tests.kube import ROOT, Kube
from tests.operator.harness import OperatorProcess

__all__ = ["apply_example", "demo_key"]

EXAMPLES = ROOT / "examples"
DEMO_KEY_VERSION = (
    "projects/signet-dev/locations/global/keyRings/demo/cryptoKeys/ca/cryptoKeyVersions/1"
)


@pytest.fixture
def demo_key(kms_emulator: EmulatorServer) -> str:
    """The key every example's Issuer names, created in the session emulator like the demo
    does, so the manifests are applied byte for byte as users would apply them."""
    version = kms_emulator.ensure_key("demo", "ca", "EC_SIGN_P256_SHA256")
    assert version.name == DEMO_KEY_VERSION
    return version.name


def cluster_scoped_objects(folder: Path) -> list[tuple[str, str]]:
    """(kind, name) of the Namespaces and ClusterIssuers a folder creates, for cleanup."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Namespace", "ClusterIssuer"):
                found.append((doc["kind"], doc["metadata"]["name"]))
    return found


@pytest.fixture
def apply_example(
    crds: Kube, signet_operator: OperatorProcess, demo_key: str
) -> Iterator[Callable[..., str]]:
    """``apply_example("quickstart")`` runs ``kubectl apply -f examples/quickstart`` (or
    ``-k`` when the folder is a kustomization) and deletes what it created afterwards."""
    created: list[tuple[str, str]] = []

    def apply(name: str) -> str:
        folder = EXAMPLES / name
        created.extend(cluster_scoped_objects(folder))
        flag = "-k" if (folder / "kustomization.yaml").exists() else "-f"
        return crds.kubectl("apply", flag, str(folder)).stdout

    yield apply
    for kind, name in reversed(created):
        crds.kubectl("delete", kind.lower(), name, "--wait=false", "--ignore-not-found")

"""examples/production-cloudkms: accepted by the API server's validation (CRD schema and
CEL rules) and the Helm values render; nothing is created and no Cloud KMS is called."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.kube import ROOT, Kube

pytestmark = pytest.mark.cluster

FOLDER = ROOT / "examples" / "production-cloudkms"


@pytest.fixture
def payments(crds: Kube) -> Iterator[str]:
    """The Certificate's namespace: a namespaced dry run needs it to exist."""
    namespace = kubernetes.client.V1Namespace(
        metadata=kubernetes.client.V1ObjectMeta(name="payments")
    )
    try:
        crds.core.create_namespace(namespace)
    except kubernetes.client.ApiException as error:
        assert error.status == 409  # left over on a shared cluster: fine, and keep it
        yield "payments"
        return
    yield "payments"
    crds.core.delete_namespace("payments")


def test_manifests_pass_server_side_dry_run(crds: Kube, payments: str) -> None:
    for name in ("clusterissuer.yaml", "certificate.yaml"):
        result = crds.kubectl("apply", "--dry-run=server", "-f", str(FOLDER / name))
        assert "(server dry run)" in result.stdout
    # Dry run means nothing was stored.
    listed = crds.kubectl("get", "clusterissuer", "production", "--ignore-not-found")
    assert listed.stdout == ""

    # The server does validate: a broken key version is refused.
    broken = (FOLDER / "clusterissuer.yaml").read_text().replace("cryptoKeyVersions/1", "v1")
    refused = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=broken, check=False)
    assert refused.returncode != 0
    assert "spec.kms.cloudKMS.keyVersion" in refused.stderr


def test_gke_values_annotate_the_operator_service_account(tmp_path: Path) -> None:
    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not built: run `make tools`")
    rendered = subprocess.run(
        [
            str(helm), "template", "signet", str(ROOT / "charts" / "signet"),
            "-n", "signet-system", "-f", str(FOLDER / "values-gke.yaml"),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    accounts = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "ServiceAccount"
    ]
    assert len(accounts) == 1
    assert accounts[0]["metadata"]["name"] == "signet"
    assert accounts[0]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "signet-operator@example-prod-123.iam.gserviceaccount.com"
    }

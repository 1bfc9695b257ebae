"""examples/quickstart: one X.509 SPIFFE identity and one SSH user certificate."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from tests.kube import Kube
from tests.operator.harness import secret_data, wait_condition

pytestmark = pytest.mark.cluster


def test_quickstart_issues_both_identities(
    crds: Kube, apply_example: Callable[[str], str], demo_key: str, tmp_path: Path
) -> None:
    applied = apply_example("quickstart")
    assert "issuer.signet.dev/quickstart created" in applied

    web = wait_condition(crds, "quickstart", "web")
    assert web["status"]["spiffeID"] == "spiffe://cluster.local/ns/quickstart/sa/web"
    assert web["status"]["keyVersion"] == demo_key
    tls = secret_data(crds, "quickstart", "web-tls")
    leaf = x509.load_pem_x509_certificate(tls["tls.crt"])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "web.quickstart.svc",
        "web.quickstart.svc.cluster.local",
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [web["status"]["spiffeID"]]
    assert leaf.issuer.rfc4514_string() == "CN=Signet Quickstart CA"

    ssh = wait_condition(crds, "quickstart", "alice-ssh")
    assert ssh["status"]["keyVersion"] == demo_key
    data = secret_data(crds, "quickstart", "alice-ssh")
    cert = tmp_path / "alice-cert.pub"
    cert.write_bytes(data["ssh-certificate"])
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True
    ).stdout
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert listing.split("Principals:")[1].split("Critical Options:")[0].split() == ["alice"]
    assert listing.split("Extensions:")[1].split() == ["permit-pty"]

"""examples/ingress-tls: a cert-manager-shaped TLS Secret an Ingress can serve."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.kube import Kube
from tests.operator.harness import wait_condition

pytestmark = pytest.mark.cluster


def test_ingress_secret_is_a_valid_tls_secret(
    crds: Kube, apply_example: Callable[[str], str], tmp_path: Path
) -> None:
    apply_example("ingress-tls")
    wait_condition(crds, "ingress-tls", "shop")

    ingress = crds.kubectl("get", "ingress", "shop", "-n", "ingress-tls", "-o", "json").stdout
    assert '"secretName": "shop-tls"' in ingress
    secret = crds.core.read_namespaced_secret("shop-tls", "ingress-tls")
    assert secret.type == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret.data)

    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret.data[key]))
    chain = x509.load_pem_x509_certificates((tmp_path / "tls.crt").read_bytes())
    (tmp_path / "leaf.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "untrusted.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:])
    )
    leaf = str(tmp_path / "leaf.pem")
    command = ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt")]
    if len(chain) > 1:
        command += ["-untrusted", str(tmp_path / "untrusted.pem")]
    for host in ("shop.example.com", "www.shop.example.com"):
        result = subprocess.run(
            [*command, "-purpose", "sslserver", "-verify_hostname", host, leaf],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": OK")
    wrong = subprocess.run(
        [*command, "-verify_hostname", "evil.example.com", leaf],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    # The key in the Secret is the certificate's key.
    pub_cert = subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey", "-in", str(tmp_path / "leaf.pem")],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    pub_key = subprocess.run(
        ["openssl", "pkey", "-pubout", "-in", str(tmp_path / "tls.key")],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert pub_cert == pub_key

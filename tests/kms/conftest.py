"""KMS test helpers; the shared fixtures live in ``tests.kms_fixtures`` (loaded by the
root conftest)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.cloud import kms_v1

from signet.kms.algorithms import get_algorithm


def fetch_public_key(
    admin: kms_v1.KeyManagementServiceClient, key_version: str
) -> tuple[str, PublicKeyTypes]:
    """PEM and parsed key straight from GetPublicKey (independent of the signer's cache)."""
    pem = admin.get_public_key(name=key_version).pem
    return pem, load_pem_public_key(pem.encode())


def openssl_verify(
    tmp_path: Path, algorithm: str, pem: str, data: bytes, signature: bytes
) -> subprocess.CompletedProcess[bytes]:
    """Verify with the openssl CLI, an implementation independent of ``cryptography``."""
    alg = get_algorithm(algorithm)
    (tmp_path / "pub.pem").write_text(pem)
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "sig.bin").write_bytes(signature)
    cmd = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "pub.pem",
        "-rawin",
        "-in",
        "data.bin",
        "-sigfile",
        "sig.bin",
    ]
    if alg.hash_name is not None:
        cmd += ["-digest", alg.hash_name]
    if alg.padding.value == "PSS":
        cmd += ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, check=False)


@pytest.fixture(scope="session")
def openssl() -> str:
    """Path of the openssl binary (skips when absent)."""
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl CLI not installed")
    return path

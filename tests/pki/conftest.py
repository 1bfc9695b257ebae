"""Certificate-construction helpers: KMS-backed CAs per algorithm, leaf keys, CLI checks.

The KMS fixtures (``kms_runner``, ``kms_key_factory``, ...) come from
``tests.kms_fixtures``, which ``tests/conftest.py`` loads for the whole suite. Every
signature here is made by the KMS emulator through the real client; nothing signs
locally except the leaf keys' own TLS/SSH handshakes.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.kms.algorithms import ALGORITHMS, KeyType, Padding
from signet.kms.cloudkms import CloudKmsSigner
from signet.pki.keys import LeafPrivateKey, generate_private_key
from signet.pki.kmskey import KmsPrivateKey, sign_in_thread
from signet.pki.x509 import build_self_signed_ca
from tests.kms_fixtures import KeyFactory, KmsRunner

T = TypeVar("T")

CA_ALGORITHMS = list(ALGORITHMS)
"""Every KMS algorithm Signet supports, each used as a CA."""

SSH_CA_ALGORITHMS = [
    name
    for name, alg in ALGORITHMS.items()
    if not (alg.key_type is KeyType.RSA and alg.padding is Padding.PSS)
]
"""The KMS algorithms OpenSSH can verify (everything but RSA-PSS)."""

LEAF_KEY_TYPES = [
    ("ECDSA", 256),
    ("ECDSA", 384),
    ("ECDSA", 521),
    ("RSA", 2048),
    ("RSA", 3072),
    ("RSA", 4096),
    ("Ed25519", None),
]


@dataclass
class KmsCa:
    """One KMS key version with a signer and its bootstrapped self-signed certificate."""

    algorithm: str
    key_version: str
    signer: CloudKmsSigner
    certificate: x509.Certificate
    runner: KmsRunner

    def sign(self, build: Callable[[KmsPrivateKey], T]) -> T:
        """Run ``build`` with a KMS adapter for this key, as the operator does."""
        return sign_with(self.runner, self.signer, build)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def sign_with(runner: KmsRunner, signer: CloudKmsSigner, build: Callable[[KmsPrivateKey], T]) -> T:
    """``sign_in_thread`` on the runner's loop, called from synchronous test code."""
    return runner.run(sign_in_thread(signer, build))


class CaFactory:
    """Session cache: one self-signed KMS CA per algorithm (RSA-4096 keys are slow)."""

    def __init__(self, runner: KmsRunner, keys: KeyFactory) -> None:
        self._runner = runner
        self._keys = keys
        self._cache: dict[str, KmsCa] = {}
        self._lock = threading.Lock()

    def signer(self, algorithm: str) -> CloudKmsSigner:
        """A fresh signer for the shared key of ``algorithm``."""
        return self._runner.signer(self._keys(algorithm), expected_algorithm=algorithm)

    def __call__(self, algorithm: str) -> KmsCa:
        with self._lock:
            if algorithm not in self._cache:
                signer = self.signer(algorithm)
                cert = sign_with(
                    self._runner,
                    signer,
                    lambda key: build_self_signed_ca(
                        key,
                        f"Signet test CA {algorithm}",
                        datetime.timedelta(days=30),
                        trust_domain="example.org",
                    ),
                )
                self._cache[algorithm] = KmsCa(
                    algorithm, signer.key_version, signer, cert, self._runner
                )
            return self._cache[algorithm]


@pytest.fixture(scope="session")
def kms_ca(kms_runner: KmsRunner, kms_key_factory: KeyFactory) -> CaFactory:
    """``kms_ca("EC_SIGN_P256_SHA256") -> KmsCa``, created once per session."""
    return CaFactory(kms_runner, kms_key_factory)


@pytest.fixture(scope="session")
def leaf_keys() -> Callable[[str, int | None], LeafPrivateKey]:
    """``leaf_keys("RSA", 4096)``: one generated key per type for the session."""
    cache: dict[tuple[str, int | None], LeafPrivateKey] = {}
    lock = threading.Lock()

    def get(algorithm: str, size: int | None) -> LeafPrivateKey:
        with lock:
            if (algorithm, size) not in cache:
                cache[(algorithm, size)] = generate_private_key(algorithm, size)
            return cache[(algorithm, size)]

    return get


def run(
    cmd: list[str], cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run a CLI tool, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def openssl_verify(
    tmp_path: Path,
    root: x509.Certificate,
    leaf: x509.Certificate,
    intermediates: tuple[x509.Certificate, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``openssl verify -x509_strict``: an X.509 path validator independent of Python."""
    cmd = [
        "openssl",
        "verify",
        "-x509_strict",
        "-CAfile",
        str(write_pem(tmp_path / "root.pem", root)),
    ]
    if intermediates:
        cmd += ["-untrusted", str(write_pem(tmp_path / "intermediates.pem", *intermediates))]
    cmd.append(str(write_pem(tmp_path / "leaf.pem", leaf)))
    return run(cmd)


def openssl_text(cert: x509.Certificate) -> str:
    """``openssl x509 -text`` output for ``cert``."""
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-text"],
        input=cert.public_bytes(serialization.Encoding.PEM),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.decode()


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern that matches ``message`` and nothing else."""
    return "^" + re.escape(message) + "$"

"""Leaf keys: serialization round trips, fingerprints agreeing with OpenSSL/OpenSSH, matching."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from signet.pki.keys import (
    LeafPrivateKey,
    load_private_key,
    openssh_fingerprint,
    private_key_matches,
    private_key_to_openssh,
    private_key_to_pem,
    spki_fingerprint,
)
from signet.pki.ssh import SshCertRequest, build_ssh_certificate
from signet.pki.x509 import LeafRequest, build_leaf
from tests.pki.conftest import LEAF_KEY_TYPES, CaFactory, exact, run

LeafKeys = Callable[[str, int | None], LeafPrivateKey]


@pytest.mark.parametrize(("algorithm", "size"), LEAF_KEY_TYPES)
def test_round_trips_and_fingerprints(
    algorithm: str, size: int | None, leaf_keys: LeafKeys, tmp_path: Path
) -> None:
    key = leaf_keys(algorithm, size)
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    openssh = private_key_to_openssh(key)
    assert openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    for encoded in (pem, openssh):
        loaded = load_private_key(encoded)
        assert private_key_to_pem(loaded) == pem

    (tmp_path / "key.pem").write_bytes(pem)
    (tmp_path / "key.pem").chmod(0o600)
    der = run(
        ["openssl", "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der"],
        cwd=tmp_path,
    )
    assert der.returncode == 0, der.stderr
    assert (
        spki_fingerprint(key.public_key())
        == hashlib.sha256((tmp_path / "pub.der").read_bytes()).hexdigest()
    )

    (tmp_path / "id").write_bytes(openssh)
    (tmp_path / "id").chmod(0o600)
    listed = run(["ssh-keygen", "-l", "-E", "sha256", "-f", "id"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[1] == openssh_fingerprint(key.public_key())


def test_other_pem_encodings_load(leaf_keys: LeafKeys) -> None:
    rsa_key = leaf_keys("RSA", 2048)
    ec_key = leaf_keys("ECDSA", 256)
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    sec1 = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert private_key_to_pem(load_private_key(pkcs1)) == private_key_to_pem(rsa_key)
    assert private_key_to_pem(load_private_key(sec1)) == private_key_to_pem(ec_key)


def test_bad_private_keys_are_refused_without_echoing_them(leaf_keys: LeafKeys) -> None:
    key = leaf_keys("ECDSA", 256)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    truncated = private_key_to_pem(key)[:-60]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    cases = [
        (b"", "private key is not an unencrypted PEM or OpenSSH private key"),
        (b"garbage", "private key is not an unencrypted PEM or OpenSSH private key"),
        (encrypted, "private key is not an unencrypted PEM or OpenSSH private key"),
        (truncated, "private key is not an unencrypted PEM or OpenSSH private key"),
        (
            private_key_to_openssh(key)[:-80],
            "private key is not an unencrypted PEM or OpenSSH private key",
        ),
        (
            weak.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "RSA key size 1024 is not supported; use 2048, 3072 or 4096",
        ),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=exact(message)) as info:
            load_private_key(data)
        # The parser's own exception (which might quote the input) is not chained in.
        error = info.value
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_private_key_matches_certificates(kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    key = leaf_keys("RSA", 2048)
    other = leaf_keys("ECDSA", 256)
    cert = ca.sign(
        lambda k: build_leaf(LeafRequest(common_name="m"), key.public_key(), ca.certificate, k)
    )
    ssh_cert = ca.sign(
        lambda k: build_ssh_certificate(
            SshCertRequest("user", "m", ("m",), datetime.timedelta(hours=1)), key.public_key(), k
        )
    )
    assert private_key_matches(key, cert)
    assert private_key_matches(key, ssh_cert)
    assert not private_key_matches(other, cert)
    assert not private_key_matches(other, ssh_cert)

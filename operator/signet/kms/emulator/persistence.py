"""Optional on-disk state for the emulator, with private keys sealed at rest.

A dev cluster that restarts its emulator must keep the same CA key, or every certificate
issued before the restart stops chaining. Private keys are sealed with AES-256-GCM (the
version name is the associated data, so a sealed key cannot be swapped onto another
version) under a key taken from ``SIGNET_KMS_EMULATOR_STATE_KEY`` (base64, 32 bytes) or,
failing that, from ``state.key`` next to the state, created once with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from signet.kms.algorithms import SigningKey

STATE_KEY_ENV = "SIGNET_KMS_EMULATOR_STATE_KEY"
"""Environment variable holding the base64 state-encryption key."""

STATE_FILE = "state.json"
KEY_FILE = "state.key"
FORMAT_VERSION = 1


class StateError(RuntimeError):
    """The state directory cannot be read or written (never carries key material)."""


def _load_or_create_key(state_dir: Path) -> bytes:
    env_value = os.environ.get(STATE_KEY_ENV)
    if env_value:
        try:
            key = base64.b64decode(env_value, validate=True)
        except binascii.Error as exc:
            raise StateError(f"{STATE_KEY_ENV} is not valid base64") from exc
        if len(key) != 32:
            raise StateError(f"{STATE_KEY_ENV} must decode to 32 bytes, got {len(key)}")
        return key
    path = state_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise StateError(f"{path} must hold 32 bytes, has {len(key)}") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class StateStore:
    """Reads and atomically rewrites ``state.json`` in one directory."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._aead = AESGCM(_load_or_create_key(self.dir))

    def seal(self, version_name: str, key: SigningKey) -> str:
        """Encrypt a private key for storage; returns base64(nonce || ciphertext)."""
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, der, version_name.encode())
        return base64.b64encode(sealed).decode()

    def unseal(self, version_name: str, sealed_b64: str) -> SigningKey:
        """Decrypt a sealed private key; fails closed if the state key is wrong."""
        raw = base64.b64decode(sealed_b64)
        try:
            der = self._aead.decrypt(raw[:12], raw[12:], version_name.encode())
        except Exception as exc:  # InvalidTag: wrong key or tampered file
            raise StateError(
                f"cannot decrypt key for {version_name}: wrong {STATE_KEY_ENV} or "
                f"tampered {STATE_FILE}"
            ) from exc
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, SigningKey):
            raise StateError(f"stored key for {version_name} has unsupported type")
        return key

    def load(self) -> dict[str, Any] | None:
        """The last saved document, or None when the directory is fresh."""
        path = self.dir / STATE_FILE
        if not path.exists():
            return None
        doc: dict[str, Any] = json.loads(path.read_text())
        if doc.get("format") != FORMAT_VERSION:
            raise StateError(f"{path} has unknown format {doc.get('format')!r}")
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Write via a 0600 temp file and rename, so a crash never leaves half a file."""
        doc = {"format": FORMAT_VERSION, **doc}
        tmp = self.dir / (STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / STATE_FILE)

"""The emulator's resources: key rings, crypto keys and versions, behind one lock.

Records are plain dataclasses so the service layer can render them into KMS messages and
the persistence layer can serialise them; the private key sits only in
:class:`VersionRecord` (``repr=False``) and never leaves this module except to sign.
Slow RSA key generation runs outside the lock so concurrent signing is not stalled.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from signet.kms.algorithms import Algorithm, SigningKey, get_algorithm
from signet.kms.emulator.names import (
    KmsStatusError,
    check_id,
    not_found,
    parse_crypto_key,
    parse_key_ring,
    parse_location,
    parse_version,
)
from signet.kms.emulator.persistence import StateStore

ENABLED = "ENABLED"
DISABLED = "DISABLED"
DESTROY_SCHEDULED = "DESTROY_SCHEDULED"
DESTROY_SCHEDULED_SECONDS = 30 * 24 * 3600
"""Cloud KMS default ``destroy_scheduled_duration`` (30 days)."""


@dataclass
class VersionRecord:
    """One key version; ``private_key`` is the only secret the emulator holds."""

    name: str
    algorithm: Algorithm
    public_pem: str
    state: str
    create_time: float
    private_key: SigningKey = field(repr=False)
    sealed_key: str | None = field(default=None, repr=False)
    destroy_time: float | None = None


@dataclass
class CryptoKeyRecord:
    """A crypto key (purpose is always ASYMMETRIC_SIGN here)."""

    name: str
    algorithm: Algorithm
    create_time: float
    next_version: int = 1
    versions: dict[int, VersionRecord] = field(default_factory=dict)


@dataclass
class KeyRingRecord:
    """A key ring; like in Cloud KMS it cannot be deleted."""

    name: str
    create_time: float


def _public_pem(key: SigningKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class KeyStore:
    """Thread-safe resource tree with optional persistence."""

    def __init__(self, persistence: StateStore | None = None) -> None:
        self._lock = threading.RLock()
        self._rings: dict[str, KeyRingRecord] = {}
        self._keys: dict[str, CryptoKeyRecord] = {}
        self._persistence = persistence
        if persistence is not None:
            self._load(persistence)

    # -- key rings ---------------------------------------------------------------------

    def create_key_ring(self, parent: str, key_ring_id: str) -> KeyRingRecord:
        """CreateKeyRing semantics: INVALID_ARGUMENT, then ALREADY_EXISTS."""
        parse_location(parent)
        check_id("KeyRing", key_ring_id)
        name = f"{parent}/keyRings/{key_ring_id}"
        with self._lock:
            if name in self._rings:
                raise KmsStatusError(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")
            ring = KeyRingRecord(name, time.time())
            self._rings[name] = ring
            self._save()
            return ring

    def get_key_ring(self, name: str) -> KeyRingRecord:
        """GetKeyRing semantics."""
        parse_key_ring(name)
        with self._lock:
            ring = self._rings.get(name)
        if ring is None:
            raise not_found(name)
        return ring

    def list_key_rings(self, parent: str) -> list[KeyRingRecord]:
        """Key rings under a location, in name order."""
        parse_location(parent)
        prefix = parent + "/keyRings/"
        with self._lock:
            return sorted(
                (r for n, r in self._rings.items() if n.startswith(prefix)), key=lambda r: r.name
            )

    # -- crypto keys -------------------------------------------------------------------

    def create_crypto_key(
        self, parent: str, crypto_key_id: str, algorithm: str, *, skip_initial_version: bool
    ) -> CryptoKeyRecord:
        """CreateCryptoKey semantics; generates version 1 unless asked not to."""
        check_id("CryptoKey", crypto_key_id)
        alg = get_algorithm(algorithm)
        self.get_key_ring(parent)
        name = f"{parent}/cryptoKeys/{crypto_key_id}"
        with self._lock:
            if name in self._keys:
                raise KmsStatusError(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")
            key = CryptoKeyRecord(name, alg, time.time())
            self._keys[name] = key
            self._save()
        if not skip_initial_version:
            self.create_version(name)
        return key

    def get_crypto_key(self, name: str) -> CryptoKeyRecord:
        """GetCryptoKey semantics."""
        parse_crypto_key(name)
        with self._lock:
            key = self._keys.get(name)
        if key is None:
            raise not_found(name)
        return key

    def list_crypto_keys(self, parent: str) -> list[CryptoKeyRecord]:
        """Crypto keys in a key ring, in name order."""
        self.get_key_ring(parent)
        prefix = parent + "/cryptoKeys/"
        with self._lock:
            return sorted(
                (k for n, k in self._keys.items() if n.startswith(prefix)), key=lambda k: k.name
            )

    # -- versions ----------------------------------------------------------------------

    def create_version(self, key_name: str) -> VersionRecord:
        """Generate a new ENABLED version (synchronously; Cloud KMS is asynchronous)."""
        key = self.get_crypto_key(key_name)
        with self._lock:
            number = key.next_version
            key.next_version += 1
        private_key = key.algorithm.generate_private_key()
        name = f"{key_name}/cryptoKeyVersions/{number}"
        record = VersionRecord(
            name=name,
            algorithm=key.algorithm,
            public_pem=_public_pem(private_key),
            state=ENABLED,
            create_time=time.time(),
            private_key=private_key,
        )
        if self._persistence is not None:
            record.sealed_key = self._persistence.seal(name, private_key)
        with self._lock:
            key.versions[number] = record
            self._save()
        return record

    def get_version(self, name: str) -> VersionRecord:
        """GetCryptoKeyVersion semantics (NOT_FOUND names the version)."""
        key_name, number = parse_version(name)
        with self._lock:
            key = self._keys.get(key_name)
            record = key.versions.get(number) if key is not None else None
        if record is None:
            raise not_found(name)
        return record

    def list_versions(self, key_name: str) -> list[VersionRecord]:
        """Versions of a key in version order."""
        key = self.get_crypto_key(key_name)
        with self._lock:
            return [key.versions[n] for n in sorted(key.versions)]

    def set_state(self, name: str, state: str) -> VersionRecord:
        """UpdateCryptoKeyVersion(state): only ENABLED <-> DISABLED transitions."""
        if state not in (ENABLED, DISABLED):
            raise KmsStatusError(
                grpc.StatusCode.INVALID_ARGUMENT, f"state must be ENABLED or DISABLED, got {state}."
            )
        record = self.get_version(name)
        with self._lock:
            if record.state not in (ENABLED, DISABLED):
                raise KmsStatusError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{name} is in state {record.state}; only ENABLED or DISABLED versions "
                    "can change state.",
                )
            record.state = state
            self._save()
        return record

    def destroy(self, name: str) -> VersionRecord:
        """DestroyCryptoKeyVersion: schedule destruction (material kept until then)."""
        record = self.get_version(name)
        with self._lock:
            if record.state not in (ENABLED, DISABLED):
                raise KmsStatusError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{name} is in state {record.state} and cannot be destroyed.",
                )
            record.state = DESTROY_SCHEDULED
            record.destroy_time = time.time() + DESTROY_SCHEDULED_SECONDS
            self._save()
        return record

    def restore(self, name: str) -> VersionRecord:
        """RestoreCryptoKeyVersion: DESTROY_SCHEDULED -> DISABLED."""
        record = self.get_version(name)
        with self._lock:
            if record.state != DESTROY_SCHEDULED:
                raise KmsStatusError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{name} is in state {record.state}, not DESTROY_SCHEDULED.",
                )
            record.state = DISABLED
            record.destroy_time = None
            self._save()
        return record

    # -- persistence -------------------------------------------------------------------

    def _save(self) -> None:
        """Rewrite the whole document; called with the lock held after each mutation."""
        if self._persistence is None:
            return
        versions: list[dict[str, Any]] = []
        for key in self._keys.values():
            for v in key.versions.values():
                versions.append(
                    {
                        "name": v.name,
                        "state": v.state,
                        "create_time": v.create_time,
                        "destroy_time": v.destroy_time,
                        "public_pem": v.public_pem,
                        "sealed_key": v.sealed_key,
                    }
                )
        self._persistence.save(
            {
                "key_rings": [
                    {"name": r.name, "create_time": r.create_time} for r in self._rings.values()
                ],
                "crypto_keys": [
                    {
                        "name": k.name,
                        "algorithm": k.algorithm.name,
                        "create_time": k.create_time,
                        "next_version": k.next_version,
                    }
                    for k in self._keys.values()
                ],
                "versions": versions,
            }
        )

    def _load(self, persistence: StateStore) -> None:
        doc = persistence.load()
        if doc is None:
            return
        for r in doc["key_rings"]:
            self._rings[r["name"]] = KeyRingRecord(r["name"], r["create_time"])
        for k in doc["crypto_keys"]:
            self._keys[k["name"]] = CryptoKeyRecord(
                k["name"], get_algorithm(k["algorithm"]), k["create_time"], k["next_version"]
            )
        for v in doc["versions"]:
            key_name, number = parse_version(v["name"])
            key = self._keys[key_name]
            key.versions[number] = VersionRecord(
                name=v["name"],
                algorithm=key.algorithm,
                public_pem=v["public_pem"],
                state=v["state"],
                create_time=v["create_time"],
                private_key=persistence.unseal(v["name"], v["sealed_key"]),
                sealed_key=v["sealed_key"],
                destroy_time=v["destroy_time"],
            )

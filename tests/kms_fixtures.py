"""pytest plugin: a KMS emulator, keys in it, and signers bound to a background loop.

Loaded for the whole suite by ``pytest_plugins = ["tests.kms_fixtures"]`` in
``tests/conftest.py``. Everything goes through the real ``google-cloud-kms`` clients over
gRPC, so tests exercise the same code path as production.

Fixtures
--------
``kms_emulator`` (session)
    A running :class:`~signet.kms.emulator.EmulatorServer` (``.address``, ``.faults``,
    ``.counters``, ``.audit``). Its audit log is written to a session temp file.
``kms_faults`` (function)
    The emulator's :class:`~signet.kms.emulator.Faults`; reset to "well-behaved" when the
    test ends. Request it whenever a test injects faults.
``kms_counters`` (function)
    The emulator's :class:`~signet.kms.emulator.Counters`, reset at the start of the test,
    e.g. ``kms_counters.count("AsymmetricSign", key_version, "OK")``.
``kms_admin`` (session)
    A synchronous ``KeyManagementServiceClient`` connected to the emulator, for setting up
    and inspecting keys (disable, destroy, ...).
``kms_key_factory`` (session)
    ``kms_key_factory("EC_SIGN_P256_SHA256") -> "projects/.../cryptoKeyVersions/1"``; one
    key per algorithm, created on first use and shared. Pass ``fresh=True`` for a key of
    your own (use it when the test disables or destroys the key).
``kms_runner`` (session)
    A :class:`KmsRunner`: a background event loop thread with an async KMS client bound to
    it. ``kms_runner.signer(version)`` returns a :class:`~signet.kms.cloudkms.CloudKmsSigner`
    bound to that loop; ``kms_runner.run(coro)`` runs a coroutine there from sync code.
    ``kms_runner.loop`` is what ``asyncio.run_coroutine_threadsafe`` needs.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import grpc
import pytest
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcTransport,
)

from signet.kms.cloudkms import CloudKmsSigner, close_client, create_client
from signet.kms.emulator import Counters, EmulatorServer, Faults, serve
from signet.kms.limiter import SignLimiter

T = TypeVar("T")

TEST_PROJECT = "signet-test"
TEST_LOCATION = "global"
TEST_KEY_RING = "signet-test"


def sync_admin_client(address: str) -> kms_v1.KeyManagementServiceClient:
    """A blocking KMS client for ``address`` (an emulator), without credentials."""
    channel = grpc.insecure_channel(address)
    return kms_v1.KeyManagementServiceClient(
        transport=KeyManagementServiceGrpcTransport(channel=channel)
    )


def create_asymmetric_key(
    admin: kms_v1.KeyManagementServiceClient, key_ring: str, key_id: str, algorithm: str
) -> str:
    """Create an ASYMMETRIC_SIGN key through the API; returns the version 1 name."""
    key = admin.create_crypto_key(
        request={
            "parent": key_ring,
            "crypto_key_id": key_id,
            "crypto_key": {
                "purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
                "version_template": {"algorithm": algorithm},
            },
        }
    )
    return f"{key.name}/cryptoKeyVersions/1"


class KeyFactory(Protocol):
    """Type of the ``kms_key_factory`` fixture."""

    def __call__(self, algorithm: str, *, fresh: bool = False) -> str: ...


class KmsRunner:
    """An event loop on a daemon thread plus an async KMS client created on it.

    Mirrors production, where the operator's loop owns the client and certificate
    construction submits ``sign()`` from worker threads.
    """

    def __init__(self, address: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kms-runner")
        self._thread.daemon = True
        self._thread.start()

        async def make() -> kms_v1.KeyManagementServiceAsyncClient:
            return create_client(address)

        self.client = self.run(make())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the runner's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def signer(self, key_version: str, **kwargs: Any) -> CloudKmsSigner:
        """A signer on this runner's client; kwargs go to :class:`CloudKmsSigner`."""
        return CloudKmsSigner(self.client, key_version, **kwargs)

    def warm_signer(self, key_version: str, **kwargs: Any) -> CloudKmsSigner:
        """A signer whose public key is already fetched, so that a fault injected next
        meets the sign call, not the key fetch."""
        signer = self.signer(key_version, **kwargs)
        self.run(signer.public_key())
        return signer

    def limiter(self, **kwargs: Any) -> SignLimiter:
        """A :class:`SignLimiter` created on the runner's loop."""

        async def make() -> SignLimiter:
            return SignLimiter(**kwargs)

        return self.run(make())

    def close(self) -> None:
        """Close the channel and stop the loop."""
        self.run(close_client(self.client))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def kms_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """Session-wide emulator (see module docstring)."""
    audit = tmp_path_factory.mktemp("kms-emulator") / "audit.jsonl"
    server = serve(port=0, audit_log=audit)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kms_faults(kms_emulator: EmulatorServer) -> Iterator[Faults]:
    """Emulator faults, reset after the test."""
    kms_emulator.faults.reset()
    try:
        yield kms_emulator.faults
    finally:
        kms_emulator.faults.reset()


@pytest.fixture
def kms_counters(kms_emulator: EmulatorServer) -> Counters:
    """Emulator call counters, zeroed at the start of the test."""
    kms_emulator.counters.reset()
    return kms_emulator.counters


@pytest.fixture(scope="session")
def kms_admin(kms_emulator: EmulatorServer) -> kms_v1.KeyManagementServiceClient:
    """Blocking admin client for the session emulator."""
    return sync_admin_client(kms_emulator.address)


@pytest.fixture(scope="session")
def kms_key_factory(kms_admin: kms_v1.KeyManagementServiceClient) -> KeyFactory:
    """Create-once keys per algorithm (see module docstring)."""
    parent = f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}"
    ring = kms_admin.create_key_ring(request={"parent": parent, "key_ring_id": TEST_KEY_RING}).name
    cache: dict[str, str] = {}
    lock = threading.Lock()
    serial = itertools.count(1)

    def factory(algorithm: str, *, fresh: bool = False) -> str:
        key_id = algorithm.lower().replace("_", "-")
        if fresh:
            return create_asymmetric_key(kms_admin, ring, f"{key_id}-{next(serial)}", algorithm)
        with lock:
            if algorithm not in cache:
                cache[algorithm] = create_asymmetric_key(kms_admin, ring, key_id, algorithm)
            return cache[algorithm]

    return factory


@pytest.fixture(scope="session")
def kms_runner(kms_emulator: EmulatorServer) -> Iterator[KmsRunner]:
    """Background loop + async client bound to the session emulator."""
    runner = KmsRunner(kms_emulator.address)
    try:
        yield runner
    finally:
        runner.close()


def run_in_threads(fn: Callable[[int], T], count: int, threads: int = 8) -> list[T]:
    """Call ``fn(i)`` for ``i in range(count)`` on a thread pool; results in order."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, range(count)))


__all__ = [
    "TEST_KEY_RING",
    "TEST_LOCATION",
    "TEST_PROJECT",
    "KeyFactory",
    "KmsRunner",
    "create_asymmetric_key",
    "run_in_threads",
    "sync_admin_client",
]

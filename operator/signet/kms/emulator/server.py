"""Start and stop an emulator instance; the object tests and the CLI hold on to.

A plain threaded ``grpc.server`` is used: handlers are short and CPU-bound (signing), so
a thread pool serves many concurrent clients without the event-loop plumbing of grpc.aio.
"""

from __future__ import annotations

import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from signet.kms.emulator.audit import AuditLog
from signet.kms.emulator.faults import Counters, Faults
from signet.kms.emulator.persistence import StateStore
from signet.kms.emulator.service import KmsService
from signet.kms.emulator.state import KeyStore, VersionRecord

DEFAULT_PROJECT = "signet-dev"
DEFAULT_LOCATION = "global"


@dataclass
class EmulatorServer:
    """A running emulator. ``faults`` and ``counters`` may be used while it serves."""

    address: str
    """``host:port`` to dial, e.g. ``127.0.0.1:40123``."""
    port: int
    faults: Faults
    counters: Counters
    audit: AuditLog
    store: KeyStore
    _server: grpc.Server

    def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving and close the audit log; safe to call twice."""
        self._server.stop(grace).wait()
        self.audit.close()

    def wait(self) -> None:
        """Block until the server terminates (CLI use)."""
        self._server.wait_for_termination()

    def ensure_key(
        self,
        key_ring: str,
        crypto_key: str,
        algorithm: str,
        *,
        project: str = DEFAULT_PROJECT,
        location: str = DEFAULT_LOCATION,
    ) -> VersionRecord:
        """Create the key ring / key if missing and return its newest version.

        Idempotent so a dev cluster can re-run its bootstrap against persisted state.
        Goes straight to the store: no RPC, no counters, no audit entries.
        """
        parent = f"projects/{project}/locations/{location}"
        ring_name = f"{parent}/keyRings/{key_ring}"
        if not any(r.name == ring_name for r in self.store.list_key_rings(parent)):
            self.store.create_key_ring(parent, key_ring)
        key_name = f"{ring_name}/cryptoKeys/{crypto_key}"
        if not any(k.name == key_name for k in self.store.list_crypto_keys(ring_name)):
            self.store.create_crypto_key(
                ring_name, crypto_key, algorithm, skip_initial_version=False
            )
        key = self.store.get_crypto_key(key_name)
        if key.algorithm.name != algorithm:
            raise ValueError(f"{key_name} exists with algorithm {key.algorithm.name}")
        versions = self.store.list_versions(key_name)
        return versions[-1] if versions else self.store.create_version(key_name)


def serve(
    port: int = 0,
    state_dir: str | os.PathLike[str] | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    faults: Faults | None = None,
    max_workers: int = 32,
) -> EmulatorServer:
    """Start an emulator on ``host:port`` (0 picks a free port) and return at once."""
    store = KeyStore(StateStore(state_dir) if state_dir is not None else None)
    faults = faults or Faults()
    counters = Counters()
    audit = AuditLog(Path(audit_log) if audit_log is not None else None)
    service = KmsService(store, faults, counters, audit)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kms-emulator"),
        handlers=[service.handler()],
        maximum_concurrent_rpcs=max_workers * 8,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind KMS emulator to {host}:{port}")
    server.start()
    return EmulatorServer(f"{host}:{bound}", bound, faults, counters, audit, store, server)

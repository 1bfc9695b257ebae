"""What the controller pass tables share: the controller under test wired with the issuer
controller to a `tests.recorded_kube.RecordedKube`, the real KMS emulator through the real
client, an audit file and an injected clock.

Each table keeps only what is its controller's own: how to build and run it, its
requests, and which audit records are its.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from signet.controller.issuers import IssuerController, IssuerId, issuer_id
from signet.kms.cloudkms import RetryPolicy, close_client, create_client
from signet.kms.emulator import Counters, EmulatorServer
from signet.kms.limiter import SignLimiter
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.pki import x509 as pki_x509
from tests.kms_fixtures import KeyFactory
from tests.recorded_kube import Key, Obj, RecordedKube

__all__ = ["ControllerBed", "RequestBed", "bed_fixture", "break_builder", "key", "signs"]

B = TypeVar("B", bound="ControllerBed")
T = TypeVar("T")

OPERATOR_NAMESPACE = "signet-system"


class ControllerBed:
    """The issuer controller over ``api``, on the emulator at ``address``. A table's Bed
    adds its controller, fed from the same API, Events, audit and clock (``now``)."""

    records_of: ClassVar[str | None] = None
    """The field that marks an audit record as the controller under test's (None: every
    record is, the issuer's CA bootstrap too)."""
    labels: dict[str, str] = {}
    """Every namespace's labels, as the controller's namespace lookup finds them."""

    def __init__(self, api: RecordedKube, address: str, audit_path: Path) -> None:
        self.api = api
        self.address = address
        self.now = datetime.datetime.now(datetime.UTC)
        self.scheduled: list[tuple[Any, float]] = []
        """The next looks asked for, (ident, delay)."""
        self.changed: list[IssuerId] = []
        """Issuers whose material changed, as the issuer controller reports them."""
        self.audit_path = audit_path
        self.audit = AuditLog(audit_path)
        self.kms = create_client(address)
        self.events = EventPoster(self.api, home_namespace=OPERATOR_NAMESPACE)
        self.issuers = IssuerController(
            self.api,  # type: ignore[arg-type]  # the recorded stand-in of KubeApi
            self.events,
            self.audit,
            kms_client=self.kms,
            limiter=SignLimiter(None, max_concurrency=4),
            operator_namespace=OPERATOR_NAMESPACE,
            on_change=self.changed.append,
            schedule=self.issuer_look,
            retry=RetryPolicy(deadline=1.0, attempt_timeout=1.0),
        )

    def issuer_look(self, ident: IssuerId, delay: float) -> None:
        """An issuer's next look: dropped, unless a table asserts on them."""

    async def _labels(self, namespace: str) -> dict[str, str] | None:
        return self.labels

    async def put_issuer(self, manifest: Obj) -> None:
        """Store an issuer and resolve it, as its watch event would."""
        self.api.put(manifest["kind"], manifest)
        await self.issuers.reconcile(issuer_id(manifest))
        await self.events.drain()

    async def _reconcile(self) -> None:
        """One pass of the controller under test."""
        raise NotImplementedError

    async def reconcile(self) -> None:
        """A pass, recording only its own calls and next looks."""
        self.scheduled.clear()
        self.api.calls.clear()
        await self._reconcile()
        await self.events.drain()

    def records(self, kind: str) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [
            r
            for r in map(json.loads, lines)
            if r["kind"] == kind and (self.records_of is None or self.records_of in r)
        ]

    async def close(self) -> None:
        await self.events.close(within=1)
        await close_client(self.kms)


class RequestBed(ControllerBed):
    """A bed whose controller answers a request through its status (a CSR, cert-manager's
    CertificateRequest), stored under ``request_key``."""

    request_key: ClassVar[Key]

    def body(self) -> Obj:
        body = self.api.get(*self.request_key)
        assert body is not None
        return copy.deepcopy(body)

    def approve(self) -> None:
        body = self.body()
        body["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
        self.api.put(self.request_key[0], body)


def bed_fixture(make: Callable[[str, Path], B]) -> Any:
    """A table's ``bed`` fixture: ``bed(scenario)`` runs ``scenario`` on a fresh event
    loop with a fresh Bed, ``make(emulator address, audit path)``."""

    @pytest.fixture
    def bed(
        kms_emulator: EmulatorServer, tmp_path: Path
    ) -> Callable[[Callable[[B], Coroutine[Any, Any, T]]], T]:
        """Run ``scenario(bed)`` on a fresh event loop with a fresh Bed."""

        def run(scenario: Callable[[B], Coroutine[Any, Any, T]]) -> T:
            async def main() -> T:
                bed = make(kms_emulator.address, tmp_path / "audit.jsonl")
                try:
                    return await scenario(bed)
                finally:
                    await bed.close()

            return asyncio.run(main())

        return run

    return bed


@pytest.fixture
def key(kms_key_factory: KeyFactory) -> str:
    """A P-256 key of this test's own, so that its signature count is this test's alone."""
    return kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)


def signs(counters: Counters, key_version: str) -> int:
    """Signatures KMS made with ``key_version``, by its own count."""
    return counters.count("AsymmetricSign", key_version, "OK")


def break_builder(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the leaf builder raise once the real one has signed through KMS and built
    (the real builder has no switch to fail after the signature); returns the repair."""
    real = pki_x509.build_leaf

    def build_then_fail(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise ValueError("encoding failed")

    monkeypatch.setattr(pki_x509, "build_leaf", build_then_fail)
    return lambda: monkeypatch.setattr(pki_x509, "build_leaf", real)

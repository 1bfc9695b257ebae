"""cert-manager CertificateRequest passes as rows: given a request, issuer state and API
faults, expect these writes, these audit records and this many KMS signatures.

The Kubernetes side is `tests.recorded_kube.RecordedKube` taught the two calls this path
makes (status PUTs conflict on a stale resourceVersion, as the apiserver has it); KMS is
the real emulator through the real client, so the signature count is KMS's own. The clock
is injected.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from signet.controller.certificaterequests import KIND, CertificateRequestController
from signet.controller.issuers import IssuerController
from signet.controller.kubeapi import ApiError, Obj
from signet.kms.cloudkms import RetryPolicy, close_client, create_client
from signet.kms.emulator import Counters, EmulatorServer
from signet.kms.limiter import SignLimiter
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from tests.kms_fixtures import KeyFactory
from tests.operator.harness import issuer_manifest
from tests.recorded_kube import RecordedKube
from tests.unit.test_csr_decisions import pkcs10

T = TypeVar("T")
NS = "shop"
NAME = "web-1"
IDENT = (NS, NAME)
ISSUER = ("Issuer", NS, "ca")
WRITE = "update_certificate_request_status"


class CertificateRequestKube(RecordedKube):
    """RecordedKube with the CertificateRequest calls of `KubeApi`."""

    async def get_certificate_request(self, namespace: str, name: str) -> Obj | None:
        return await self.get_object(KIND, namespace, name)

    async def update_certificate_request_status(self, namespace: str, name: str, body: Obj) -> Obj:
        key = (KIND, namespace, name)
        after = self._call(WRITE, key, body)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"certificaterequests {name!r} not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        current["status"] = copy.deepcopy(body["status"])
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return self._answer(copy.deepcopy(current), after)


class Bed:
    """The CertificateRequest and issuer controllers over a recorded API, on the real
    emulator."""

    def __init__(self, address: str, audit_path: Path) -> None:
        self.api = CertificateRequestKube()
        self.now = datetime.datetime.now(datetime.UTC)
        self.scheduled: list[tuple[tuple[str, str], float]] = []
        self.audit_path = audit_path
        audit = AuditLog(audit_path)
        self.kms = create_client(address)
        self.events = EventPoster(self.api, home_namespace="signet-system")
        self.issuers = IssuerController(
            self.api,  # type: ignore[arg-type]  # the recorded stand-in of KubeApi
            self.events,
            audit,
            kms_client=self.kms,
            limiter=SignLimiter(None, max_concurrency=4),
            operator_namespace="signet-system",
            on_change=lambda issuer: None,
            schedule=lambda ident, delay: None,
            retry=RetryPolicy(deadline=1.0, attempt_timeout=1.0),
        )
        self.requests = CertificateRequestController(
            self.api,  # type: ignore[arg-type]
            self.events,
            audit,
            self.issuers,
            schedule=lambda ident, delay: self.scheduled.append((ident, delay)),
            namespace_labels=self._labels,
            clock=lambda: self.now,
        )

    async def _labels(self, namespace: str) -> dict[str, str] | None:
        return {}

    async def issuer(self, key_version: str) -> None:
        self.api.put("Issuer", issuer_manifest("ca", key_version, namespace=NS))
        await self.issuers.reconcile(ISSUER)
        await self.events.drain()  # the issuer's own Events are not the request's
        self.api.events.clear()

    def request(self, *, verdict: str | None = "Approved", dns: str = f"web.{NS}.svc") -> None:
        conditions = [{"type": verdict, "status": "True"}] if verdict else []
        self.api.put(
            KIND,
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": KIND,
                "metadata": {
                    "name": NAME,
                    "namespace": NS,
                    "annotations": {"cert-manager.io/certificate-name": "web"},
                },
                "spec": {
                    "issuerRef": {"group": "signet.dev", "kind": "Issuer", "name": "ca"},
                    "request": base64.b64encode(pkcs10(dns=(dns,))).decode(),
                },
                "status": {"conditions": conditions},
            },
        )

    def approve(self) -> None:
        body = self.body()
        body["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
        self.api.put(KIND, body)

    def body(self) -> Obj:
        body = self.api.get(KIND, NS, NAME)
        assert body is not None
        return copy.deepcopy(body)

    def ready(self) -> dict[str, Any]:
        found = [c for c in self.body()["status"].get("conditions", []) if c["type"] == "Ready"]
        return found[0] if found else {}

    def watch(self, body: Obj | None = None) -> tuple[str, str] | None:
        return self.requests.observe(self.body() if body is None else body, deleted=False)

    async def reconcile(self) -> None:
        self.scheduled.clear()
        self.api.calls.clear()
        await self.requests.reconcile(IDENT)
        await self.events.drain()

    def records(self, kind: str) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [
            r for r in map(json.loads, lines) if r["kind"] == kind and "certificateRequest" in r
        ]

    async def close(self) -> None:
        await self.events.close(within=1)
        await close_client(self.kms)


@pytest.fixture
def bed(
    kms_emulator: EmulatorServer, tmp_path: Path
) -> Callable[[Callable[[Bed], Coroutine[Any, Any, T]]], T]:
    """Run ``scenario(bed)`` on a fresh event loop with a fresh Bed."""

    def run(scenario: Callable[[Bed], Coroutine[Any, Any, T]]) -> T:
        async def main() -> T:
            bed = Bed(kms_emulator.address, tmp_path / "audit.jsonl")
            try:
                return await scenario(bed)
            finally:
                await bed.close()

        return asyncio.run(main())

    return run


@pytest.fixture
def key(kms_key_factory: KeyFactory) -> str:
    """A P-256 key of this test's own, so that its signature count is this test's alone."""
    return kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)


def _signs(counters: Counters, key_version: str) -> int:
    return counters.count("AsymmetricSign", key_version, "OK")


def test_an_approved_request_is_issued_with_one_write_in_cert_manager_s_shape(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.request()
        assert bed.watch() == IDENT
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == [WRITE, "create_event"]
        status = bed.body()["status"]
        assert base64.b64decode(status["certificate"]).startswith(b"-----BEGIN CERTIFICATE")
        assert base64.b64decode(status["ca"]).startswith(b"-----BEGIN CERTIFICATE")
        assert [c["type"] for c in status["conditions"]] == ["Approved", "Ready"]
        ready = bed.ready()
        assert (ready["status"], ready["reason"]) == ("True", "Issued")
        assert ready["lastTransitionTime"] and "failureTime" not in status
        (event,) = bed.api.events
        assert event["involvedObject"]["apiVersion"] == "cert-manager.io/v1"
        (signature,) = bed.records("signet.dev/signature")
        assert signature["certManagerCertificate"] == {"namespace": NS, "name": "web"}
        (delivery,) = bed.records("signet.dev/delivery")
        assert delivery["outcome"] == "written"
        assert bed.watch() is None  # answered: never looked at again
        await bed.reconcile()  # a restart's pass, from the API
        assert bed.api.writes() == []

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA bootstrap and the leaf


def test_a_request_not_approved_costs_nothing_until_it_is(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.request(verdict=None)
        assert bed.watch() is None
        await bed.reconcile()  # a pass anyway (a restart): still nothing
        assert bed.api.writes() == [] and bed.records("signet.dev/signature") == []
        bed.approve()
        assert bed.watch() == IDENT
        await bed.reconcile()
        assert bed.ready()["reason"] == "Issued"

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_denied_request_fails_with_failure_time_and_is_never_signed(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.request(verdict="Denied")
        assert bed.watch() == IDENT
        await bed.reconcile()
        ready = bed.ready()
        assert (ready["status"], ready["reason"]) == ("False", "Denied")
        assert ready["message"].startswith("RequestDenied: ")
        assert bed.body()["status"]["failureTime"]
        assert bed.watch() is None

    bed(scenario)
    assert _signs(kms_counters, key) == 1


def test_a_policy_refusal_fails_naming_the_rule_with_a_warning(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.request(dns="web.billing.svc")
        await bed.reconcile()
        ready = bed.ready()
        assert (ready["status"], ready["reason"]) == ("False", "Failed")
        assert "spec.request dNSName[0] 'web.billing.svc' is not allowed" in ready["message"]
        assert bed.body()["status"]["failureTime"]
        (event,) = bed.api.events
        assert (event["type"], event["reason"]) == ("Warning", "DNSNameNotAllowed")
        assert bed.records("signet.dev/signature") == []

    bed(scenario)
    assert _signs(kms_counters, key) == 1


def test_a_missing_issuer_is_pending_once_and_its_arrival_issues(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        bed.request()
        await bed.reconcile()
        pending = bed.body()
        ready = bed.ready()
        assert (ready["status"], ready["reason"]) == ("False", "Pending")
        assert ready["message"].startswith("IssuerNotFound: ")
        assert "failureTime" not in pending["status"]
        assert [(ident, delay > 0) for ident, delay in bed.scheduled] == [(IDENT, True)]
        assert bed.watch() is None  # our own Pending write does not start it early
        await bed.reconcile()  # the retry: still missing, and Pending says so already
        assert bed.api.writes() == []
        await bed.issuer(key)
        bed.requests.on_issuer_change(ISSUER)
        assert bed.scheduled[-1] == (IDENT, 0)
        await bed.reconcile()
        assert bed.ready()["reason"] == "Issued"

        # The watch delivers the Pending body late, after the answer: it signs nothing.
        assert bed.watch(pending) == IDENT
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == []
        assert len(bed.records("signet.dev/signature")) == 1

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_conflict_looks_again_at_once_with_the_same_certificate(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.request()
        bed.api.fail(WRITE, 409)
        await bed.reconcile()
        assert bed.scheduled == [(IDENT, 0)]
        await bed.reconcile()
        assert bed.ready()["reason"] == "Issued"
        (delivery,) = bed.records("signet.dev/delivery")
        assert delivery["outcome"] == "written"

    bed(scenario)
    assert _signs(kms_counters, key) == 2

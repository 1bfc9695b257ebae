"""cert-manager CertificateRequest passes as rows: given a request, issuer state and API
faults, expect these writes, these audit records and this many KMS signatures.

The Kubernetes side is `tests.recorded_kube.RecordedKube` taught the two calls this path
makes (status PUTs conflict on a stale resourceVersion, as the apiserver has it); KMS is
the real emulator through the real client, so the signature count is KMS's own. The clock
is injected.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

from signet.controller.certificaterequests import KIND, CertificateRequestController
from signet.controller.kubeapi import ApiError, Obj
from signet.kms.emulator import Counters
from tests.operator.harness import issuer_manifest
from tests.recorded_kube import RecordedKube
from tests.unit.bed import RequestBed, bed_fixture, key
from tests.unit.bed import signs as _signs
from tests.unit.test_csr_decisions import pkcs10

__all__ = ["bed", "key"]  # fixtures, used by name
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


class Bed(RequestBed):
    """The CertificateRequest and issuer controllers over a recorded API, on the real
    emulator."""

    request_key = (KIND, NS, NAME)
    records_of = "certificateRequest"

    def __init__(self, address: str, audit_path: Path) -> None:
        super().__init__(CertificateRequestKube(), address, audit_path)
        self.requests = CertificateRequestController(
            self.api,  # type: ignore[arg-type]
            self.events,
            self.audit,
            self.issuers,
            schedule=lambda ident, delay: self.scheduled.append((ident, delay)),
            namespace_labels=self._labels,
            clock=lambda: self.now,
        )

    async def issuer(self, key_version: str) -> None:
        await self.put_issuer(issuer_manifest("ca", key_version, namespace=NS))
        self.api.events.clear()  # the issuer's own Events are not the request's

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

    def ready(self) -> dict[str, Any]:
        found = [c for c in self.body()["status"].get("conditions", []) if c["type"] == "Ready"]
        return found[0] if found else {}

    def watch(self, body: Obj | None = None) -> tuple[str, str] | None:
        return self.requests.observe(self.body() if body is None else body, deleted=False)

    async def _reconcile(self) -> None:
        await self.requests.reconcile(IDENT)


bed = bed_fixture(Bed)


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

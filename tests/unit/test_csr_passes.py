"""CertificateSigningRequest passes as rows: given a request, issuer state and API faults,
expect these writes, these audit records and this many KMS signatures.

The Kubernetes side is `tests.recorded_kube.RecordedKube` taught the two calls the CSR
path makes (status writes conflict on a stale resourceVersion, and status.certificate is
immutable once set, as the apiserver has it); KMS is the real emulator through the real
client, so the signature count is KMS's own. The clock is injected.
"""

from __future__ import annotations

import base64
import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signet.controller.csrs import KIND, CsrController
from signet.controller.kubeapi import ApiError, Obj
from signet.kms.emulator import Counters
from signet.observe.audit import record_hash
from signet.observe.metrics import Metrics
from tests.operator.harness import issuer_manifest
from tests.recorded_kube import RecordedKube
from tests.unit.bed import RequestBed, bed_fixture, break_builder, key
from tests.unit.bed import signs as _signs

__all__ = ["bed", "key"]  # fixtures, used by name
NS = "team-a"
NAME = "csr-1"
ISSUER = ("Issuer", NS, "ca")
WRITE = "update_certificate_signing_request_status"


class CsrKube(RecordedKube):
    """RecordedKube with the CertificateSigningRequest calls of `KubeApi`."""

    async def get_certificate_signing_request(self, name: str) -> Obj | None:
        return await self.get_object(KIND, None, name)

    async def update_certificate_signing_request_status(self, name: str, body: Obj) -> Obj:
        key = (KIND, "", name)
        after = self._call(WRITE, key, body)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"certificatesigningrequests {name!r} not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        if (current.get("status") or {}).get("certificate"):
            raise ApiError(422, "Invalid", "status.certificate: field is immutable")
        current["status"] = copy.deepcopy(body["status"])
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return self._answer(copy.deepcopy(current), after)


def _pem_request(dns_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


class Bed(RequestBed):
    """The CSR controller and the issuer controller over a CsrKube, on the real emulator."""

    request_key = (KIND, "", NAME)
    records_of = "certificateSigningRequest"

    def __init__(self, address: str, audit_path: Path) -> None:
        super().__init__(CsrKube(), address, audit_path)
        self.metrics = Metrics()
        self.csrs = CsrController(
            self.api,  # type: ignore[arg-type]
            self.events,
            self.audit,
            self.issuers,
            schedule=lambda name, delay: self.scheduled.append((name, delay)),
            namespace_labels=self._labels,
            metrics=self.metrics,
            clock=lambda: self.now,
        )

    async def start(self, key_version: str, *, approved: bool = True, **names: str) -> None:
        """A Ready Issuer that signs CSRs, and a request of its namespace's ServiceAccount."""
        spec = {"certificateSigningRequests": {"enabled": True}}
        await self.put_issuer(issuer_manifest("ca", key_version, namespace=NS, **spec))
        self.api.events.clear()  # the issuer's own Events are not the request's
        conditions = [{"type": "Approved", "status": "True", "reason": "Test"}] if approved else []
        self.api.put(
            KIND,
            {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": KIND,
                "metadata": {"name": NAME},
                "spec": {
                    "signerName": f"issuers.signet.dev/{NS}.ca",
                    "request": _pem_request(names.get("dns", f"web.{NS}.svc")),
                    "username": f"system:serviceaccount:{NS}:web",
                    "groups": ["system:serviceaccounts"],
                    "usages": ["digital signature", "server auth"],
                },
                "status": {"conditions": conditions},
            },
        )

    def watch(self) -> str | None:
        return self.csrs.observe(self.body(), deleted=False)

    async def _reconcile(self) -> None:
        await self.csrs.reconcile(NAME)

    def answers(self, answer: str, reason: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "signet_certificate_requests_total", {"kind": KIND, "answer": answer, "reason": reason}
        )

    def waiting(self) -> float | None:
        return self.metrics.registry.get_sample_value(
            "signet_certificate_requests_waiting", {"kind": KIND}
        )

    def certificate(self) -> bytes:
        return base64.b64decode((self.body().get("status") or {}).get("certificate") or "")


bed = bed_fixture(Bed)


def test_an_approved_request_is_signed_with_one_write_and_two_records(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        assert bed.watch() == NAME
        assert bed.waiting() == 1
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == [WRITE, "create_event"]
        assert (bed.answers("Issued", "Issued"), bed.waiting()) == (1, 0)
        assert bed.certificate().startswith(b"-----BEGIN CERTIFICATE-----")
        assert [c["type"] for c in bed.body()["status"]["conditions"]] == ["Approved"]
        (signature,) = bed.records("signet.dev/signature")
        (delivery,) = bed.records("signet.dev/delivery")
        assert delivery["outcome"] == "written"
        assert delivery["serialNumber"] == signature["serialNumber"]
        assert bed.watch() is None  # answered: never looked at again
        await bed.reconcile()  # a restart's pass, from the API
        assert bed.api.writes() == []

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA bootstrap and the leaf


def test_a_request_not_approved_costs_nothing_until_it_is(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, approved=False)
        assert bed.watch() is None
        await bed.reconcile()  # a pass anyway (a restart): still nothing
        assert bed.api.writes() == [] and bed.records("signet.dev/signature") == []
        bed.approve()
        assert bed.watch() == NAME
        await bed.reconcile()
        assert bed.certificate()

    bed(scenario)
    assert _signs(kms_counters, key) == 2


@pytest.mark.parametrize("status", [500, 503, 429, 403])
def test_a_failed_status_write_keeps_the_signature_for_the_next_pass(
    bed: Any, key: str, kms_counters: Counters, status: int
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail(WRITE, status)
        await bed.reconcile()
        assert not bed.certificate()
        assert bed.scheduled == [(NAME, pytest.approx(2))]
        assert bed.watch() is None  # backing off: watch events do not start it early
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.certificate()
        deliveries = bed.records("signet.dev/delivery")
        assert [d["outcome"] for d in deliveries] == ["write-failed", "written"]
        assert deliveries[0]["signature"] == deliveries[1]["signature"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # bootstrap + one leaf, whatever the write did


def test_a_leaf_that_fails_to_build_after_kms_signed_is_audited_as_discarded(
    bed: Any, key: str, kms_counters: Counters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real builder signs through KMS and then raises (no switch makes it fail on
    demand): the spent signature is explained, the request gets no certificate, and the
    next pass signs once more rather than never."""

    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        repair = break_builder(monkeypatch)
        await bed.reconcile()
        assert not bed.certificate()
        (signature,) = bed.records("signet.dev/signature")
        (delivery,) = bed.records("signet.dev/delivery")
        assert (delivery["outcome"], delivery["reason"]) == ("discarded", "BuildFailed")
        assert delivery["signature"] == record_hash(signature)
        assert "encoding failed" in delivery["message"]
        ((_, delay),) = bed.scheduled
        repair()
        bed.now += datetime.timedelta(seconds=delay)
        await bed.reconcile()
        assert bed.certificate()

    bed(scenario)
    assert _signs(kms_counters, key) == 3  # bootstrap, the spent leaf, the delivered one


def test_a_write_applied_but_answered_with_an_error_is_recognised_from_the_watch(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail(WRITE, 503, applied=True)
        await bed.reconcile()
        assert bed.certificate()  # stored, though the answer was an error
        assert bed.watch() is None  # the watch brings it: accounted for as written
        assert [d["outcome"] for d in bed.records("signet.dev/delivery")] == [
            "write-failed",
            "written",
        ]
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.api.writes() == []

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_conflict_looks_again_at_once_with_the_same_certificate(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail(WRITE, 409)
        await bed.reconcile()
        assert bed.scheduled == [(NAME, 0)]
        await bed.reconcile()
        assert bed.certificate()
        (delivery,) = bed.records("signet.dev/delivery")
        assert delivery["outcome"] == "written"

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_refusal_is_one_failed_condition_beside_the_approval(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, dns="web.billing.svc")
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == [WRITE, "create_event"]
        conditions = bed.body()["status"]["conditions"]
        assert [(c["type"], c.get("reason")) for c in conditions] == [
            ("Approved", "Test"),
            ("Failed", "DNSNameNotAllowed"),
        ]
        assert "spec.request dNSName[0] 'web.billing.svc'" in conditions[1]["message"]
        (event,) = bed.api.events
        assert (event["type"], event["reason"]) == ("Warning", "DNSNameNotAllowed")
        assert event["involvedObject"]["kind"] == KIND
        assert bed.answers("Failed", "DNSNameNotAllowed") == 1
        assert bed.watch() is None

    bed(scenario)
    assert _signs(kms_counters, key) == 1  # the CA bootstrap only

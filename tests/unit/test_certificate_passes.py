"""Reconcile passes as table rows: given objects, issuer state and API faults, expect these
API calls, this status, these audit records and this next look.

The Kubernetes side is `tests.recorded_kube.RecordedKube` (every call recorded); KMS is the
real emulator through the real google-cloud-kms client, so the signature count is KMS's own.
The clock is injected: a row moves time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from signet.controller.certificates import CertificateController
from signet.controller.issuers import IssuerId
from signet.controller.trust import TrustPublisher
from signet.kms.emulator import Counters, Faults
from signet.observe.audit import record_hash
from signet.observe.metrics import Metrics
from tests.kms_fixtures import KeyFactory
from tests.operator.harness import certificate_manifest, issuer_manifest
from tests.recorded_kube import RecordedKube
from tests.unit.bed import ControllerBed, bed_fixture, break_builder, key
from tests.unit.bed import signs as _signs

__all__ = ["bed", "key"]  # fixtures, used by name
NS = "team-a"
CERT = (NS, "web")
ISSUER = ("Issuer", NS, "ca")
START = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


class Bed(ControllerBed):
    """One controller pair over a RecordedKube, on the real KMS emulator."""

    def __init__(self, address: str, audit_path: Path) -> None:
        super().__init__(RecordedKube(), address, audit_path)
        self.certificates = CertificateController(
            self.api,  # type: ignore[arg-type]
            self.events,
            self.audit,
            Metrics(),
            self.issuers,
            TrustPublisher(self.api),  # type: ignore[arg-type]
            schedule=lambda ident, delay: self.scheduled.append((ident, delay)),
            namespace_labels=self._labels,
            clock=lambda: self.now,
        )

    def issuer_look(self, ident: IssuerId, delay: float) -> None:
        self.scheduled.append((ident, delay))

    async def issuer(self, key_version: str, *, cluster: bool = False, **spec: Any) -> None:
        namespace = None if cluster else NS
        await self.put_issuer(issuer_manifest("ca", key_version, namespace=namespace, **spec))

    def certificate(self, **spec: Any) -> None:
        self.api.put("Certificate", certificate_manifest("web", NS, "ca", **spec))

    async def start(self, key_version: str, **spec: Any) -> None:
        """A Ready Issuer on ``key_version`` and a Certificate of ``spec``: where most
        passes begin."""
        await self.issuer(key_version)
        self.certificate(**spec)

    def watch(self, kind: str = "Certificate") -> Any:
        """Deliver the stored object as its watch event would; the ident if a pass is due."""
        body = self.api.get(kind, NS, "web" if kind == "Certificate" else "web-identity")
        assert body is not None
        if kind == "Secret":
            self.certificates.observe_secret(body, deleted=False)
            return None
        return self.certificates.observe_certificate(body, deleted=False)

    async def _reconcile(self) -> None:
        await self.certificates.reconcile(CERT)

    def status(self) -> dict[str, Any]:
        body = self.api.get("Certificate", *CERT)
        assert body is not None
        return dict(body.get("status") or {})

    def ready(self) -> tuple[str, str]:
        (ready,) = [c for c in self.status()["conditions"] if c["type"] == "Ready"]
        return ready["status"], ready["reason"]

    def next_look(self) -> float:
        delays = [delay for ident, delay in self.scheduled if ident == CERT]
        assert delays, f"nothing scheduled for {CERT}"
        return min(delays)

    def deliveries(self) -> list[dict[str, Any]]:
        """Delivery records of Certificates (not of the issuer's CA)."""
        return [r for r in self.records("signet.dev/delivery") if "certificate" in r]

    def secret(self) -> dict[str, Any]:
        secret = self.api.get("Secret", NS, "web-identity")
        assert secret is not None
        return secret


bed = bed_fixture(Bed)


def test_first_issuance_writes_secret_bundle_status_and_two_records(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        assert bed.watch() == CERT
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == [
            "create_secret",
            "apply_configmap",
            "patch_status",
            "create_event",
        ]
        assert bed.ready() == ("True", "Ready")
        (signature,) = [
            r for r in bed.records("signet.dev/signature") if r["purpose"] == "certificate"
        ]
        (delivery,) = bed.deliveries()
        assert delivery["outcome"] == "written"
        assert delivery["serialNumber"] == signature["serialNumber"] == bed.status()["serialNumber"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA bootstrap and the leaf


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failed_secret_write_keeps_the_signature_for_the_next_pass(
    bed: Any, key: str, kms_counters: Counters, status: int
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("create_secret", status)
        await bed.reconcile()
        assert bed.ready() == ("False", "SecretWriteFailed")
        assert "kept" in bed.status()["conditions"][0]["message"]
        assert bed.next_look() == pytest.approx(2)
        assert bed.watch() is None  # its own failure status does not start a pass
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        deliveries = bed.deliveries()
        assert [d["outcome"] for d in deliveries] == ["write-failed", "written"]
        assert deliveries[0]["signature"] == deliveries[1]["signature"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # bootstrap + one leaf, whatever the write did


def test_a_refused_secret_write_backs_off_and_is_never_signed_again(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    """403 (RBAC) is fixed outside Kubernetes, where Signet cannot see it: the kept
    certificate is tried again on the backoff schedule, and never signed again."""

    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("create_secret", 403, times=2)
        await bed.reconcile()
        assert bed.ready() == ("False", "SecretWriteFailed")
        assert bed.next_look() == pytest.approx(2)
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.next_look() == pytest.approx(4)
        bed.now += datetime.timedelta(seconds=4)
        await bed.reconcile()  # RBAC fixed
        assert bed.ready() == ("True", "Ready")
        outcomes = [d["outcome"] for d in bed.deliveries()]
        assert outcomes == ["write-failed", "write-failed", "written"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_write_applied_but_answered_with_an_error_is_recognised(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    """The response was lost after the apiserver stored the Secret: the next pass finds
    its own certificate there and records it as written, without a second signature."""

    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("create_secret", 503, applied=True)
        await bed.reconcile()
        assert bed.ready() == ("False", "SecretWriteFailed")
        bed.watch("Secret")  # the watch brings the Secret that did get stored
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        assert [m for m, _ in bed.api.writes()] == ["apply_configmap", "patch_status"]
        deliveries = bed.deliveries()
        assert [d["outcome"] for d in deliveries] == ["write-failed", "written"]
        assert "lost" in deliveries[1]["note"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_a_conflict_rereads_the_secret_and_writes_the_kept_certificate(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        await bed.reconcile()
        # Renewal requested; someone else's write lands between our read and our write.
        body = bed.api.get("Certificate", *CERT)
        assert body is not None
        body["spec"]["duration"] = "48h"
        body["metadata"]["generation"] = 2
        bed.api.fail("replace_secret", 409, reason="Conflict")
        await bed.reconcile()
        assert ("get_object", ("Secret", NS, "web-identity")) in [
            (c.method, c.key) for c in bed.api.calls
        ]
        assert bed.next_look() == 0
        await bed.reconcile()
        assert bed.status()["revision"] == 2
        outcomes = [d["outcome"] for d in bed.deliveries()]
        assert outcomes == ["written", "write-failed", "written"]

    bed(scenario)
    assert _signs(kms_counters, key) == 3


def test_a_secret_write_refused_404_again_backs_off_instead_of_spinning(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    """A 404 on the Secret also means its namespace is gone: the first is looked at again
    at once (someone deleted the Secret), the next ones on the backoff schedule."""

    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("create_secret", 404, times=3, reason="NotFound")
        await bed.reconcile()
        assert bed.next_look() == 0
        await bed.reconcile()
        first = bed.next_look()
        assert first > 0
        await bed.reconcile()  # too early: it only waits, and writes nothing
        assert 0 < bed.next_look() <= first
        bed.now += datetime.timedelta(seconds=first)
        await bed.reconcile()
        assert bed.next_look() > first
        outcomes = [d["outcome"] for d in bed.deliveries()]
        assert outcomes == ["write-failed"] * 3

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA's bootstrap and the one leaf


def test_a_kept_certificate_for_an_old_spec_is_discarded_and_audited(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("create_secret", 503)
        await bed.reconcile()
        body = bed.api.get("Certificate", *CERT)
        assert body is not None
        body["spec"]["x509"]["dnsNames"] = [f"api.{NS}.svc"]
        body["metadata"]["generation"] = 2
        assert bed.watch() == CERT  # a new generation does not wait out the backoff
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        outcomes = [(d["outcome"], d.get("reason")) for d in bed.deliveries()]
        assert outcomes == [("write-failed", None), ("discarded", "Superseded"), ("written", None)]

    bed(scenario)
    assert _signs(kms_counters, key) == 3


def test_a_certificate_that_fails_to_build_after_kms_signed_is_audited_as_discarded(
    bed: Any, key: str, kms_counters: Counters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder failing after KMS answered (a fault the real builder has no switch
    for, so the real one runs and then raises): the spent signature still has its record
    and a delivery record saying why no certificate came of it; nothing is written."""

    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        break_builder(monkeypatch)
        await bed.reconcile()
        assert bed.ready() == ("False", "InternalError")
        (ready,) = [c for c in bed.status()["conditions"] if c["type"] == "Ready"]
        assert "spent" in ready["message"]
        assert bed.api.get("Secret", NS, "web-identity") is None
        (signature,) = [
            r for r in bed.records("signet.dev/signature") if r["purpose"] == "certificate"
        ]
        (delivery,) = bed.deliveries()
        assert (delivery["outcome"], delivery["reason"]) == ("discarded", "BuildFailed")
        assert delivery["signature"] == record_hash(signature)
        assert "encoding failed" in delivery["message"]

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA's bootstrap and the one spent leaf


def test_a_certificate_met_while_its_new_issuer_resolves_waits_for_it(bed: Any, key: str) -> None:
    """An Issuer and its Certificate applied together: the Certificate's pass can come
    while the Issuer's first resolution waits on KMS. It is neither pending nor resolved
    then, and must not be reported missing (a false IssuerNotFound, a Warning Event and a
    backoff); it waits, and the resolution wakes it."""

    async def scenario(bed: Bed) -> None:
        manifest = issuer_manifest("ca", key, namespace=NS)
        bed.api.put("Issuer", manifest)
        bed.issuers.observe(manifest, deleted=False)
        bed.certificate()
        resolving = asyncio.create_task(bed.issuers.reconcile(ISSUER))
        await asyncio.sleep(0)  # one step of the loop: the task takes the body, awaits KMS
        assert ISSUER not in bed.issuers.pending and not resolving.done()
        await bed.reconcile()
        assert bed.api.writes() == [] and bed.scheduled == []
        await resolving
        assert ISSUER in bed.changed
        await bed.reconcile()  # what on_issuer_change schedules
        assert bed.ready() == ("True", "Ready")
        assert "failedIssuanceAttempts" not in bed.status()

    bed(scenario)


def test_a_restarted_operator_tells_of_an_issuer_only_if_its_status_changes(
    bed: Any, key: str
) -> None:
    """A new process resolves every Issuer afresh. One whose stored status already says
    what it finds gets no status write and no second Ready Event: a restart writes nothing
    an SRE would read as news."""

    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        assert [m for m, _ in bed.api.writes()] == ["patch_status", "create_event"]
        bed.api.calls.clear()
        restarted = ControllerBed(bed.api, bed.address, bed.audit_path)
        try:
            await restarted.issuers.reconcile(ISSUER)
            await restarted.events.drain()
            assert restarted.issuers.states[ISSUER].ready
            assert bed.api.writes() == []
            await bed.issuer(key, ssh={"enabled": False})  # a change is news again
            assert [m for m, _ in bed.api.writes()] == ["patch_status", "create_event"]
        finally:
            await restarted.close()

    bed(scenario)


def test_a_missing_issuer_backs_off_and_wakes_when_it_appears(bed: Any, key: str) -> None:
    async def scenario(bed: Bed) -> None:
        bed.certificate()
        delays = []
        for _ in range(4):
            await bed.reconcile()
            assert bed.ready() == ("False", "IssuerNotFound")
            delays.append(bed.next_look())
            assert bed.watch() is None  # its own status does not start a pass
            bed.scheduled.clear()
            await bed.reconcile()  # woken early (say, its Secret changed): waits on
            assert bed.api.writes() == [] and bed.next_look() == pytest.approx(delays[-1])
            bed.now += datetime.timedelta(seconds=delays[-1])
        assert delays == [2, 4, 8, 16]
        assert bed.status()["failedIssuanceAttempts"] == 4
        await bed.issuer(key)
        assert ISSUER in bed.changed
        bed.scheduled.clear()
        bed.certificates.on_issuer_change(ISSUER)
        assert bed.next_look() == 0
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")

    bed(scenario)


def test_an_issuer_that_is_not_ready_backs_off(bed: Any) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer("projects/p/locations/l/keyRings/r/cryptoKeys/none/cryptoKeyVersions/1")
        bed.certificate()
        await bed.reconcile()
        assert bed.ready() == ("False", "IssuerNotReady")
        assert bed.next_look() == pytest.approx(2)
        await bed.reconcile()
        assert bed.api.writes() == []

    bed(scenario)


def test_no_exception_leaves_a_pass_without_a_status(bed: Any, key: str) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        bed.api.fail("get_object", 503)  # the Certificate cannot even be read
        await bed.certificates.reconcile(CERT)
        assert bed.next_look() == pytest.approx(2)
        bed.api.fail("patch_status", 500)  # written, but Ready cannot be reported
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.ready() == ("False", "APIError")
        assert bed.next_look() == pytest.approx(2)
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        assert [m for m, _ in bed.api.writes()] == ["patch_status"]  # no second write

    bed(scenario)


def test_an_invalid_issuer_spec_is_not_retried(bed: Any, kms_key_factory: KeyFactory) -> None:
    key = kms_key_factory("EC_SIGN_P256_SHA256")

    async def scenario(bed: Bed) -> None:
        await bed.issuer(key, policy={"maxDuration": "forever"})
        state = bed.issuers.states[ISSUER]
        assert (state.ready, state.reason, state.reason.permanent) == (
            False,
            "InvalidDuration",
            True,
        )
        assert [ident for ident, _ in bed.scheduled] == []

    bed(scenario)


def test_a_ca_bootstrap_is_signed_once_even_when_its_status_write_fails(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        bed.api.fail("patch_status", 503)
        await bed.issuer(key)
        assert bed.issuers.states[ISSUER].ready
        assert bed.records("signet.dev/delivery") == []
        await bed.issuers.reconcile(ISSUER)
        (signature,) = bed.records("signet.dev/signature")
        assert signature["purpose"] == "ca-bootstrap"
        (published,) = bed.records("signet.dev/delivery")
        assert published["outcome"] == "published"
        assert published["serialNumber"] == signature["serialNumber"]
        (first_use,) = bed.records("signet.dev/key")
        assert (first_use["event"], first_use["keyVersion"]) == ("KeyVersionInUse", key)

    bed(scenario)
    assert _signs(kms_counters, key) == 1


def _ready_pass(bed: Bed) -> Any:
    """A first issuance; returns the status it left."""

    async def issue() -> dict[str, Any]:
        bed.certificate()
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        return bed.status()

    return issue()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ({"metadata": {"name": "web-identity", "namespace": NS}}, "SecretNotManaged"),
        (
            {
                "metadata": {
                    "name": "web-identity",
                    "namespace": NS,
                    "labels": {"app.kubernetes.io/managed-by": "signet"},
                    "annotations": {"signet.dev/certificate-name": "other"},
                },
                "type": "kubernetes.io/tls",
            },
            "SecretInUse",
        ),
    ],
    ids=["foreign", "another-certificates"],
)
def test_a_secret_that_is_not_ours_to_write_is_refused_without_a_signature(
    bed: Any, key: str, kms_counters: Counters, secret: Any, reason: str
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        bed.api.put("Secret", secret)
        bed.watch("Secret")
        bed.certificate()
        await bed.reconcile()
        assert bed.ready() == ("False", reason)
        assert [m for m, _ in bed.api.writes()] == ["patch_status", "create_event"]
        assert [ident for ident, _ in bed.scheduled if ident == CERT] == []  # waits for a change

    bed(scenario)
    assert _signs(kms_counters, key) == 1  # the CA bootstrap only


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"x509": {"dnsNames": ["payments.billing.svc"]}}, "DNSNameNotAllowed"),
        ({"x509": {"dnsNames": [f"*.{NS}.svc"]}}, "WildcardNotAllowed"),
        ({"duration": "9000h"}, "DurationTooLong"),
        ({"duration": "forever"}, "InvalidDuration"),
    ],
)
def test_refusals_are_permanent_and_cost_no_signature(
    bed: Any, key: str, kms_counters: Counters, spec: Any, reason: str
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, **spec)
        await bed.reconcile()
        assert bed.ready() == ("False", reason)
        assert [ident for ident, _ in bed.scheduled if ident == CERT] == []
        assert bed.watch() == CERT  # its own status comes back: looked at, nothing written
        await bed.reconcile()
        assert bed.api.writes() == []

    bed(scenario)
    assert _signs(kms_counters, key) == 1


def test_a_cluster_issuer_serves_only_selected_namespaces_and_wakes_on_a_label(
    bed: Any, key: str
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key, cluster=True, namespaceSelector={"matchLabels": {"pki": "on"}})
        bed.api.put(
            "Certificate",
            certificate_manifest(
                "web", NS, "ca", issuerRef={"name": "ca", "kind": "ClusterIssuer"}
            ),
        )
        assert bed.watch() == CERT
        await bed.reconcile()
        assert bed.ready() == ("False", "NamespaceNotAllowed")
        bed.labels = {"pki": "on"}
        bed.scheduled.clear()
        bed.certificates.on_namespace_change(NS)
        assert bed.next_look() == 0
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")

    bed(scenario)


def test_kms_unavailable_backs_off_and_records_no_delivery(
    bed: Any, key: str, kms_faults: Faults
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.issuer(key)
        kms_faults.fail_next(20, grpc.StatusCode.UNAVAILABLE)
        bed.certificate()
        await bed.reconcile()
        assert bed.ready()[1] in ("KMSUnavailable", "KMSQuotaExceeded")
        assert bed.next_look() == pytest.approx(2)
        assert bed.deliveries() == []
        assert [m for m, _ in bed.api.writes()] == ["patch_status", "create_event"]

    bed(scenario)


def test_drifted_metadata_is_repaired_without_a_signature(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, secretTemplate={"labels": {"team": "a"}})
        await bed.reconcile()
        secret = bed.secret()
        del secret["metadata"]["labels"]["team"]
        secret["metadata"]["resourceVersion"] = "9999"
        bed.watch("Secret")
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == ["patch_secret", "create_event"]
        assert bed.secret()["metadata"]["labels"]["team"] == "a"
        assert bed.api.events[-1]["reason"] == "SecretRepaired"

    bed(scenario)
    assert _signs(kms_counters, key) == 2


def test_renewal_time_reissues_once_with_the_next_revision(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, duration="1h")
        await bed.reconcile()
        first = bed.status()
        assert bed.watch() is None  # up to date: settled from the caches, no pass
        renewal = datetime.datetime.fromisoformat(first["renewalTime"].replace("Z", "+00:00"))
        bed.now = renewal + datetime.timedelta(seconds=1)
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == [
            "replace_secret",
            "patch_status",
            "create_event",
        ]
        assert bed.status()["revision"] == 2
        assert bed.status()["serialNumber"] != first["serialNumber"]
        (issuing,) = [c for c in bed.status()["conditions"] if c["type"] == "Issuing"]
        assert "Renewing" in issuing["message"]

    bed(scenario)
    assert _signs(kms_counters, key) == 3

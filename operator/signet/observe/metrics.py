"""Prometheus metrics, named after cert-manager's with a ``signet_`` prefix.

Per-certificate gauges are produced at scrape time from one small record per Certificate
(`signet.observe.certmetrics`), instead of 40,000 labelled children kept alive in the client
library: dashboards get the same series, the operator keeps a fraction of the memory.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import Metric

from signet.observe.certmetrics import CertificateRecord, CertificateSeries, CertKey
from signet.observe.exposition import metrics_app, serve

ROTATION_PHASES = ("Stable", "Propagating", "Reissuing", "Retiring")
"""The phases of `signet.decisions.rotation.Phase` (observe sits below decisions)."""


class Metrics:
    """All of Signet's metrics in one registry (one per operator instance)."""

    def __init__(self, queue_depth: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, CPU seconds, open fds: what dashboards and
        # alerts on the operator itself read.
        ProcessCollector(registry=self.registry)
        self.certificates: dict[CertKey, CertificateRecord] = {}
        self.certificate_series = CertificateSeries(self.certificates)
        self.issuances = Counter(
            "signet_certificate_issuances",
            "Issuance attempts by result (success, failure, denied) and trigger reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.kms_sign_seconds = Histogram(
            "signet_kms_sign_duration_seconds",
            "Wall time of KMS AsymmetricSign calls including retries, by outcome and backend "
            "(cloudkms, pkcs11).",
            ["outcome", "backend"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.kms_errors = Counter(
            "signet_kms_errors",
            "KMS attempts that failed, by code (a gRPC status, or a PKCS#11 error class) and "
            "backend.",
            ["code", "backend"],
            registry=self.registry,
        )
        self.secret_writes = Counter(
            "signet_secret_writes",
            "Secret writes by operation (create, replace, patch).",
            ["operation"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "signet_events_dropped",
            "Kubernetes Events not posted because too many were already queued.",
            registry=self.registry,
        )
        self.requests = Counter(
            "signet_certificate_requests",
            "Kubernetes certificate requests answered (PodCertificateRequest, "
            "CertificateSigningRequest), by kind, answer (Issued, Denied, Failed) and reason.",
            ["kind", "answer", "reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "signet_certificate_request_duration_seconds",
            "Seconds from this process first seeing a certificate request to its answer "
            "being written, by kind and answer.",
            ["kind", "answer"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
            registry=self.registry,
        )
        self.requests_waiting = Gauge(
            "signet_certificate_requests_waiting",
            "Certificate requests of Signet's signers not answered yet, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.signatures_discarded = Counter(
            "signet_signatures_discarded",
            "KMS signatures spent on a certificate that was never delivered, by reason "
            "(each one is on the audit trail with its delivery record).",
            ["reason"],
            registry=self.registry,
        )
        self._ledgers: list[Callable[[], int]] = []
        self.signatures_undelivered = Gauge(
            "signet_signatures_undelivered",
            "Certificates signed and not yet delivered: kept for the next write attempt.",
            registry=self.registry,
        )
        self.signatures_undelivered.set_function(lambda: sum(size() for size in self._ledgers))
        self.leader = Gauge(
            "signet_leader",
            "1 while this replica acts (always, without peering), 0 while it stands by.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "signet_workqueue_depth",
            "Keys due for processing that no worker has taken yet.",
            registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.rotation_phase = Gauge(
            "signet_issuer_rotation_phase",
            "1 for the key-rotation phase each issuer is in (Stable, Propagating, Reissuing, "
            "Retiring), 0 for the others.",
            ["kind", "namespace", "name", "phase"],
            registry=self.registry,
        )

    def observe_certificate(
        self,
        key: CertKey,
        *,
        issuer_name: str,
        issuer_kind: str,
        ready: str,
        not_before: datetime.datetime | None,
        not_after: datetime.datetime | None,
        renewal: datetime.datetime | None,
    ) -> None:
        self.certificates[key] = CertificateRecord(
            issuer_name,
            issuer_kind,
            ready,
            not_before.timestamp() if not_before else None,
            not_after.timestamp() if not_after else None,
            renewal.timestamp() if renewal else None,
        )

    def track_undelivered(self, size: Callable[[], int]) -> None:
        """Count a ledger's waiting certificates in ``signet_signatures_undelivered``."""
        self._ledgers.append(size)

    def track_shards(self, members: Callable[[], float], owned: Callable[[], float]) -> None:
        """Only with ``--shards``: without sharding there are no members to count."""
        Gauge(
            "signet_shard_members",
            "Live shard members (replicas holding an unexpired Lease), this one included.",
            registry=self.registry,
        ).set_function(members)
        Gauge(
            "signet_shard_owned",
            "Certificates this replica owns (0 while it is joining or its lease lapsed).",
            registry=self.registry,
        ).set_function(owned)

    def forget_certificate(self, key: CertKey) -> None:
        self.certificates.pop(key, None)

    def observe_rotation(self, issuer: tuple[str, str, str], phase: str) -> None:
        for each in ROTATION_PHASES:
            self.rotation_phase.labels(*issuer, each).set(1.0 if each == phase else 0.0)

    def forget_issuer(self, issuer: tuple[str, str, str]) -> None:
        for each in ROTATION_PHASES:
            with contextlib.suppress(KeyError):
                self.rotation_phase.remove(*issuer, each)

    def collect(self) -> Iterator[Metric]:
        """Every family /metrics exports, the per-certificate ones included."""
        yield from self.registry.collect()
        yield from self.certificate_series.collect()

    def serve(self, port: int, address: str = "0.0.0.0") -> int:  # noqa: S104 - a pod port
        return serve(metrics_app(self.registry, self.certificate_series), port, address)

"""The operator's moving parts, wired once at startup and torn down at cleanup.

Everything stateful lives here, in one object kopf carries in its ``memo``: the API
client, the KMS client and limiter, the work queue that is the only scheduler, and the
controllers. Handlers in `signet.controller.handlers` only forward watch events to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signet.controller.certificates import CertificateController
from signet.controller.csrs import CsrController
from signet.controller.issuers import IssuerController, IssuerId
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.leadership import LeaderGate
from signet.controller.podcertificates import PodCertificateController
from signet.controller.trust import TrustPublisher
from signet.controller.trustbundles import ClusterTrustBundlePublisher, published_issuers
from signet.controller.watchcache import cert_id
from signet.kms.cloudkms import RetryPolicy, SignObservation, close_client, create_client
from signet.kms.limiter import SignLimiter
from signet.observe.audit import AuditLog
from signet.observe.events import EventPoster
from signet.observe.metrics import Metrics
from signet.schedule.queue import WorkQueue
from signet.secretformat import layout

logger = logging.getLogger(__name__)

STANDBY_RECHECK = 30.0
TRUST_BUNDLE_RETRY = 10.0
EVENTS_DRAIN_SECONDS = 5.0
"""How long a shutdown goes on posting queued Events (the pod's grace period is 30 s)."""
TRUST = "TrustBundle"
POD_CERTIFICATE = "PodCertificateRequest"
CERTIFICATE_SIGNING_REQUEST = "CertificateSigningRequest"
CLUSTER_TRUST_BUNDLE = "ClusterTrustBundle"
Key = tuple[str, str, str]
"""(kind, namespace or "", name): Certificates, Issuers and ClusterIssuers share one queue."""


@dataclass
class Config:
    """Read once at startup from flags and environment (see `signet run --help`)."""

    namespaces: list[str] = field(default_factory=list)
    kms_emulator: str | None = None
    metrics_port: int = 9402
    audit_log: Path | None = None
    sign_qps: float | None = None
    max_concurrent_signs: int = 32
    kms_deadline: float = 10.0
    peering: str | None = None
    peering_priority: int = 0
    workers: int = 32
    api_connections: int = 16
    operator_namespace: str = "signet-system"


class Runtime:
    """The operator's moving parts, wired once at startup and torn down at cleanup."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.terminating_namespaces: set[str] = set()
        self.activity = 0
        """Watch events and passes so far; the heap trimmer waits for it to stand still."""
        self.ready = asyncio.Event()
        self._held: set[Key] = set()
        """Keys a standby put back; due at once when it takes over."""

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        # Certificate building blocks a thread while KMS signs; the default pool (cores + 4)
        # would cap in-flight signatures at six on a small node.
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(
                config.max_concurrent_signs + 8, thread_name_prefix="sign"
            )
        )
        self.api = KubeApi(connections=config.api_connections)
        self.queue: WorkQueue[Key] = WorkQueue(self._process, workers=config.workers)
        self.metrics = Metrics(queue_depth=lambda: float(self.queue.due))
        self.kms = create_client(config.kms_emulator)
        self.limiter = SignLimiter(config.sign_qps, max_concurrency=config.max_concurrent_signs)
        self.events = EventPoster(
            self.api,
            home_namespace=config.operator_namespace,
            dropped=self.metrics.events_dropped.inc,
        )
        self.audit = AuditLog(config.audit_log)
        self.issuers = IssuerController(
            self.api,
            self.events,
            self.audit,
            kms_client=self.kms,
            limiter=self.limiter,
            operator_namespace=config.operator_namespace,
            on_change=self._issuer_changed,
            schedule=lambda ident, delay: self.queue.add(ident, delay),
            observe_sign=self._observe_sign,
            retry=RetryPolicy(
                deadline=config.kms_deadline, attempt_timeout=min(10.0, config.kms_deadline)
            ),
        )
        self.certificates = CertificateController(
            self.api,
            self.events,
            self.audit,
            self.metrics,
            self.issuers,
            TrustPublisher(self.api),
            schedule=lambda ident, delay: self.queue.add(("Certificate", *ident), delay),
            namespace_labels=self._labels_of,
            namespace_terminating=self.terminating_namespaces.__contains__,
        )
        self.pod_certificates = PodCertificateController(
            self.api,
            self.events,
            self.audit,
            self.issuers,
            schedule=lambda ident, delay: self.queue.add((POD_CERTIFICATE, *ident), delay),
            namespace_labels=self._labels_of,
            metrics=self.metrics,
        )
        self.csrs = CsrController(
            self.api,
            self.events,
            self.audit,
            self.issuers,
            schedule=lambda name, delay: self.queue.add(
                (CERTIFICATE_SIGNING_REQUEST, "", name), delay
            ),
            namespace_labels=self._labels_of,
            serves=self._serves,
            metrics=self.metrics,
        )
        self.trust_bundles = ClusterTrustBundlePublisher(self.api)
        # Fill the Secret summaries before any Certificate is looked at, so a restart does
        # not mistake "not seen yet" for "missing" and re-issue.
        scopes: list[str | None] = list(config.namespaces) or [None]
        for namespace in scopes:
            async for page in self.api.list_secrets(layout.SELECTOR, namespace):
                self.certificates.load_secrets(page)
        if config.metrics_port:
            self.metrics.serve(config.metrics_port)
        self.leadership = LeaderGate(
            self.api,
            config.peering,
            config.namespaces[0] if config.namespaces else None,
            config.peering_priority,
            on_leader=self._resume_held,
        )
        leadership = self.leadership
        self.metrics.leader.set_function(lambda: 1.0 if leadership.leader else 0.0)
        await self.leadership.start()
        self.queue.start()
        # Bundles of issuers deleted while no operator ran are withdrawn now; the others
        # are left as they are (publishing checks the issuer first).
        try:
            for issuer in await published_issuers(self.api, tuple(config.namespaces)):
                self.queue.add((CLUSTER_TRUST_BUNDLE, "", "/".join(issuer)))
        except ApiError as error:  # not worth failing the start for
            logger.warning("ClusterTrustBundles not listed: %s; none withdrawn", error)
        self._trimmer = asyncio.create_task(
            _trim_heap_when_quiet(
                lambda: self.activity, before=self.certificates.forget_parsed_specs
            ),
            name="signet-malloc-trim",
        )
        self.ready.set()

    async def _labels_of(self, namespace: str) -> dict[str, str] | None:
        """Labels from the Namespace watch; a GET only for one the watch has not shown yet."""
        labels = self.namespace_labels.get(namespace)
        if labels is None:
            body = await self.api.get_namespace(namespace)
            if body is None:
                return None
            labels = self.namespace_labels.setdefault(
                namespace, dict(body["metadata"].get("labels") or {})
            )
        return labels

    def _serves(self, namespace: str | None) -> bool:
        """Whether this process answers for ``namespace`` (None: for no namespace). A
        cluster-scoped request is seen by every installation; the one serving its namespace
        answers it, and requests of no namespace are left to a cluster-wide one."""
        return not self.config.namespaces or namespace in self.config.namespaces

    def _observe_sign(self, observation: SignObservation) -> None:
        if observation.method == "AsymmetricSign":
            self.metrics.kms_sign_seconds.labels(observation.outcome).observe(observation.seconds)
        for code in observation.attempt_codes:
            if code != "OK":
                self.metrics.kms_errors.labels(code).inc()

    def _resume_held(self) -> None:
        """This replica just took over: the keys it held back as a standby are due now,
        not at their next standby re-check (kopf re-lists only once when it resumes)."""
        held, self._held = self._held, set()
        for key in held:
            self.queue.add(key, 0)

    async def stop(self) -> None:
        self._trimmer.cancel()
        await self.leadership.stop()
        await self.queue.stop()
        await self.events.close(within=EVENTS_DRAIN_SECONDS)
        await close_client(self.kms)
        await self.api.close()

    async def _process(self, key: Key) -> None:
        self.activity += 1
        if not self.leadership.leader:
            self._held.add(key)
            self.queue.add(key, STANDBY_RECHECK)  # and at once when this replica takes over
            return
        kind, namespace, name = key
        if kind == "Certificate":
            await self.certificates.reconcile(cert_id(namespace, name))
        elif kind == POD_CERTIFICATE:
            await self.pod_certificates.reconcile((namespace, name))
        elif kind == CERTIFICATE_SIGNING_REQUEST:
            await self.csrs.reconcile(name)
        elif kind == CLUSTER_TRUST_BUNDLE:
            issuer_kind, issuer_namespace, issuer_name = name.split("/")
            issuer = (issuer_kind, issuer_namespace, issuer_name)
            if not await self.trust_bundles.publish(issuer, self.issuers.states.get(issuer)):
                self.queue.add(key, TRUST_BUNDLE_RETRY)
        elif kind == TRUST:
            issuer_kind, issuer_namespace, issuer_name = name.split("/")
            await self.certificates.publish_trust(
                (issuer_kind, issuer_namespace, issuer_name), namespace
            )
        else:
            await self.issuers.reconcile(key)

    # -- watch events, forwarded by the kopf handlers --------------------------------------
    def certificate_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        metadata = body["metadata"]
        key = ("Certificate", metadata["namespace"], metadata["name"])
        deleted = event_type == "DELETED"
        needs_pass = self.certificates.observe_certificate(body, deleted, busy=self.queue.busy(key))
        if deleted:
            self.queue.forget(key)
        elif needs_pass:
            self.queue.add(key)

    def _issuer_changed(self, issuer: IssuerId) -> None:
        self.pod_certificates.on_issuer_change(issuer)
        self.csrs.on_issuer_change(issuer)
        self.queue.add((CLUSTER_TRUST_BUNDLE, "", "/".join(issuer)))
        for namespace in self.certificates.on_issuer_change(issuer):
            self.queue.add((TRUST, namespace, "/".join(issuer)))

    def issuer_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        deleted = event_type == "DELETED"
        self.issuers.observe(body, deleted)
        metadata = body["metadata"]
        key = (body["kind"], metadata.get("namespace") or "", metadata["name"])
        if deleted:
            self.queue.forget(key)
        else:
            self.queue.add(key)

    def pod_certificate_request_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        ident = self.pod_certificates.observe(body, event_type == "DELETED")
        if ident is not None:
            self.queue.add((POD_CERTIFICATE, *ident))

    def certificate_signing_request_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        name = self.csrs.observe(body, event_type == "DELETED")
        if name is not None:
            self.queue.add((CERTIFICATE_SIGNING_REQUEST, "", name))

    def secret_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        self.certificates.observe_secret(body, event_type == "DELETED")

    def namespace_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        name = body["metadata"]["name"]
        labels: dict[str, Any] = dict(body["metadata"].get("labels") or {})
        if event_type == "DELETED":
            self.namespace_labels.pop(name, None)
            self.terminating_namespaces.discard(name)
            return
        if body["metadata"].get("deletionTimestamp"):
            self.terminating_namespaces.add(name)
        if self.namespace_labels.get(name) != labels:
            self.namespace_labels[name] = labels
            self.certificates.on_namespace_change(name)


async def _trim_heap_when_quiet(
    activity: Callable[[], int], before: Callable[[], None], interval: float = 1.0
) -> None:
    """Hand freed heap back to the OS once a burst of work is over.

    Watch events are large, short-lived dicts and strings (a Secret body is tens of KB
    parsed) while what Signet keeps per object is small and long-lived; glibc keeps the
    freed space between them, so RSS would stay at the startup peak. malloc_trim returns
    it; running it only after a quiet second keeps it off the busy path. ``before`` drops
    what only helps during a burst.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return  # not glibc: nothing to do
    trimmed_at = seen = activity()
    while True:
        await asyncio.sleep(interval)
        now = activity()
        if now == seen and now != trimmed_at:
            before()
            await asyncio.to_thread(trim, 0)
            trimmed_at = now
        seen = now

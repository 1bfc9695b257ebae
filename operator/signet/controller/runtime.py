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

from signet.api import GROUP, VERSION
from signet.api.issuer import IssuerSpec
from signet.controller.certificaterequests import CertificateRequestController
from signet.controller.certificates import CertificateController
from signet.controller.csrs import CsrController
from signet.controller.informer import LIST_PAGE, Collection, Informer, Sink
from signet.controller.issuers import IssuerController, IssuerId
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.leadership import LeaderGate
from signet.controller.podcertificates import PodCertificateController
from signet.controller.shards import Shards, group_of
from signet.controller.trust import TrustPublisher
from signet.controller.trustbundles import ClusterTrustBundlePublisher, published_issuers
from signet.controller.watchcache import cert_id
from signet.decisions.shards import Timing, shard_key
from signet.issuance import TrustSet
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
CERTIFICATE_REQUEST = "CertificateRequest"
"""cert-manager's, of Signet's issuers."""
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
    rotation_overlap: bool = True
    peering: str | None = None
    peering_priority: int = 0
    workers: int = 32
    api_connections: int = 16
    operator_namespace: str = "signet-system"
    shards: bool = False
    """Share the work among replicas by Leases (`signet.controller.shards`)."""
    shard_lease_seconds: float = 15.0
    replica_id: str = ""


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
        self.shards: Shards | None = None
        self._foreign: set[Key] = set()
        """Keys another shard member owned at their last pass; due here if they move here."""

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
            metrics=self.metrics,
            rotation_overlap=config.rotation_overlap,
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
        self.certificate_requests = CertificateRequestController(
            self.api,
            self.events,
            self.audit,
            self.issuers,
            schedule=lambda ident, delay: self.queue.add((CERTIFICATE_REQUEST, *ident), delay),
            namespace_labels=self._labels_of,
            metrics=self.metrics,
        )
        self.trust_bundles = ClusterTrustBundlePublisher(self.api)
        self.issuers.trust_published = self._trust_published
        self.issuers.old_leaves = self.certificates.leaves_on
        self._certificate_informers: list[Informer] = []
        self.issuers.certificates_known = lambda: (
            bool(self._certificate_informers)
            and all(informer.listed.is_set() for informer in self._certificate_informers)
        )
        # Each watch holds its connection for minutes: a pool of its own, unbounded.
        self.watch_api = KubeApi(connections=0)
        self._informers: list[asyncio.Task[None]] = []
        # Fill the Secret summaries and learn the issuers before any Certificate is looked
        # at, so a restart does not mistake "not seen yet" for "missing" (and re-issue) or
        # for "no such issuer" (and report it).
        first = [
            *self._inform("", "v1", "secrets", "Secret", self.secret_event, layout.SELECTOR),
            *self._inform(GROUP, VERSION, "issuers", "Issuer", self.issuer_event),
            *self._inform(
                GROUP,
                VERSION,
                "clusterissuers",
                "ClusterIssuer",
                self.issuer_event,
                cluster_scoped=True,
            ),
        ]
        await asyncio.gather(*(informer.listed.wait() for informer in first))
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
        if config.shards:
            self.shards = Shards(
                config.replica_id,
                config.operator_namespace,
                group_of(config.namespaces),
                Timing(config.shard_lease_seconds),
                on_change=self._shards_changed,
            )
            shards = self.shards
            self.metrics.track_shards(
                lambda: float(len(shards.members)), lambda: float(self._owned_certificates())
            )
            self.issuers.leads = lambda ident: shards.owns(shard_key(*ident))
            await self.shards.start()
        self.queue.start()
        # Bundles of issuers deleted while no operator ran are withdrawn now; the others
        # are left as they are (publishing checks the issuer first).
        try:
            for issuer in await published_issuers(self.api, tuple(config.namespaces)):
                self.queue.add((CLUSTER_TRUST_BUNDLE, "", "/".join(issuer)))
        except ApiError as error:  # not worth failing the start for
            logger.warning("ClusterTrustBundles not listed: %s; none withdrawn", error)
        await _say_whether_cert_manager_is_installed(self.api)
        self._certificate_informers = self._inform(
            GROUP, VERSION, "certificates", "Certificate", self.certificate_event
        )
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

    def _trust_published(self, issuer: IssuerId, trust: TrustSet, spec: IssuerSpec) -> bool:
        """Whether every bundle of the issuer holds ``trust``: a rotation lets the new key
        sign only after this, so no peer meets a leaf it has no anchor for."""
        publisher = self.certificates.trust
        if not all(
            publisher.published(issuer, trust, namespace)
            for namespace in self.certificates.namespaces_of(issuer)
        ):
            return False
        return not spec.pod_certificates.enabled or self.trust_bundles.holds(issuer, trust)

    def _observe_sign(self, observation: SignObservation) -> None:
        if observation.method == "AsymmetricSign":
            self.metrics.kms_sign_seconds.labels(observation.outcome, observation.backend).observe(
                observation.seconds
            )
        for code in observation.attempt_codes:
            if code != "OK":
                self.metrics.kms_errors.labels(code, observation.backend).inc()

    def _resume_held(self) -> None:
        """This replica just took over: the keys it held back as a standby are due now,
        not at their next standby re-check (kopf re-lists only once when it resumes)."""
        self.issuers.forget_written()
        held, self._held = self._held, set()
        for key in held:
            self.queue.add(key, 0)

    def _shards_changed(self) -> None:
        """Members came or went (or this replica's lease lapsed or came back): the keys
        that are ours now are due at once; those no longer ours are dropped at their pass."""
        shards = self.shards
        assert shards is not None
        moved = [key for key in self._foreign if shards.owns(_shard_key(key))]
        for key in moved:
            self._foreign.discard(key)
            self.queue.add(key, 0)
        for issuer, state in self.issuers.states.items():
            if not state.ready:  # perhaps waiting for a bootstrap this replica now owns
                self.queue.add(issuer, 0)

    def _owned_certificates(self) -> int:
        shards = self.shards
        if shards is None or not shards.acting():
            return 0
        certs = list(self.certificates.cache.issuer_links.targets)
        return sum(1 for ns, name in certs if shards.owns(shard_key("Certificate", ns, name)))

    def _inform(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        sink: Sink,
        label_selector: str | None = None,
        *,
        cluster_scoped: bool = False,
    ) -> list[Informer]:
        """List and watch ``plural`` in every served namespace (or cluster-wide) into
        ``sink``, here rather than through kopf (see `signet.controller.informer`)."""
        started = []
        scopes: list[str | None] = [*self.config.namespaces] or [None]
        for namespace in [None] if cluster_scoped else scopes:
            collection = Collection(group, version, plural, namespace, label_selector)
            informer = Informer(self.watch_api, collection, sink, page=LIST_PAGE, kind=kind)
            task = asyncio.create_task(informer.run(), name=f"signet-informer {collection}")
            self._informers.append(task)
            started.append(informer)
        return started

    async def stop(self) -> None:
        self._trimmer.cancel()
        for task in self._informers:
            task.cancel()
        await asyncio.gather(*self._informers, return_exceptions=True)
        await self.watch_api.close()
        await self.leadership.stop()
        await self.queue.stop()
        if self.shards is not None:
            await self.shards.stop()
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
        if (
            self.shards is not None
            and kind not in ("Issuer", "ClusterIssuer", TRUST)  # every replica needs those
            and not self.shards.owns(_shard_key(key))
        ):
            self._foreign.add(key)
            return
        if kind == "Certificate":
            await self.certificates.reconcile(cert_id(namespace, name))
        elif kind == POD_CERTIFICATE:
            await self.pod_certificates.reconcile((namespace, name))
        elif kind == CERTIFICATE_SIGNING_REQUEST:
            await self.csrs.reconcile(name)
        elif kind == CERTIFICATE_REQUEST:
            await self.certificate_requests.reconcile((namespace, name))
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
            self._foreign.discard(key)
        elif needs_pass:
            self.queue.add(key)

    def _issuer_changed(self, issuer: IssuerId) -> None:
        self.pod_certificates.on_issuer_change(issuer)
        self.csrs.on_issuer_change(issuer)
        self.certificate_requests.on_issuer_change(issuer)
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
        self._gone(POD_CERTIFICATE, event_type, body)
        if ident is not None:
            self.queue.add((POD_CERTIFICATE, *ident))

    def certificate_signing_request_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        name = self.csrs.observe(body, event_type == "DELETED")
        self._gone(CERTIFICATE_SIGNING_REQUEST, event_type, body)
        if name is not None:
            self.queue.add((CERTIFICATE_SIGNING_REQUEST, "", name))

    def certificate_request_event(self, event_type: str | None, body: Obj) -> None:
        self.activity += 1
        ident = self.certificate_requests.observe(body, event_type == "DELETED")
        self._gone(CERTIFICATE_REQUEST, event_type, body)
        if ident is not None:
            self.queue.add((CERTIFICATE_REQUEST, *ident))

    def _gone(self, kind: str, event_type: str | None, body: Obj) -> None:
        """A deleted request is no longer anyone's share to take over."""
        if event_type == "DELETED" and self._foreign:
            metadata = body["metadata"]
            self._foreign.discard((kind, metadata.get("namespace") or "", metadata["name"]))

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


def _shard_key(key: Key) -> str:
    """A ClusterTrustBundle goes with its issuer: one replica both resolves and publishes."""
    kind, namespace, name = key
    if kind == CLUSTER_TRUST_BUNDLE:
        issuer_kind, issuer_namespace, issuer_name = name.split("/")
        return shard_key(issuer_kind, issuer_namespace, issuer_name)
    return shard_key(kind, namespace, name)


async def _say_whether_cert_manager_is_installed(api: KubeApi) -> None:
    """cert-manager is often installed after Signet: without its CRDs there is nothing to
    watch, which is no error. kopf starts the watch when they appear (it watches CRDs), so
    a later install needs no restart; this line says which case a start is in."""
    try:
        installed = await api.serves("cert-manager.io/v1", "certificaterequests")
    except ApiError as error:
        logger.warning("cert-manager CRDs not looked up: %s", error)
        return
    if installed:
        logger.info("cert-manager CRDs installed: answering CertificateRequests for Signet issuers")
    else:
        logger.info(
            "cert-manager CRDs not installed: no CertificateRequests to answer; they are "
            "watched from the moment the CRDs appear"
        )


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

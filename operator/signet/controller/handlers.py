"""The kopf handlers: register, configure, forward. Nothing else.

Every handler is an async ``@kopf.on.event`` (sync ones would run in threads and race
the queue): no finalizers, no diff-base annotations, no progress storage, so kopf itself
writes nothing to the API.

Certificates, Secrets and issuers are not watched through kopf at all but by the
runtime's informers (`signet.controller.informer`): kopf's per-object path set the pace of
a restart over 100,000 Certificates, and the runtime lists Secrets and issuers before
Certificates, an order kopf's watchers do not keep. Secrets in particular must never get
kopf create/update handlers (the diff-base annotation would copy the private key into an
annotation); the informer watches them with a server-side label selector.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from signet.controller.informer import LIST_PAGE
from signet.controller.kubeapi import login_from_environment, open_session
from signet.controller.pacing import ListPacer
from signet.controller.runtime import Config, Runtime

logger = logging.getLogger(__name__)


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


class NoEssence(kopf.AnnotationsDiffBaseStorage):
    """kopf derives each watched body's "essence" (a deep copy) and reads back the last one
    from an annotation to find what changed, for change handlers. Signet has none, so both
    were pure cost: 11% of the operator's CPU while issuing, and a copy of every Secret's
    private key. No essence on either side is kopf's "nothing changed"."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None


@kopf.on.login()
async def login(
    settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any
) -> kopf.AiohttpSession | None:
    """Signet's credentials (`login_from_environment`) in a session of its own making, so
    the list pacer can hold kopf's listings back (see `signet.controller.pacing`)."""
    info = login_from_environment(settings)
    if info is None:
        return None
    pacer: ListPacer = memo["pacer"]
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        aiohttp_session=open_session(info, trace_configs=[pacer.trace_config()]),
    )


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # Signet posts its own Events (signet.observe.events)
    settings.persistence.diffbase_storage = NoEssence()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # List in pages, and (the pacer) take the next page only once this one is handled:
    # 10,000 objects parsed at once would be the operator's memory peak.
    settings.watching.chunk_size = LIST_PAGE
    # Per-object worker tasks; handlers return in microseconds, so workers may exit almost
    # at once and free their slot.
    settings.queueing.worker_limit = 200
    settings.queueing.idle_timeout = 0.1
    settings.networking.request_timeout = 60
    config: Config = memo["config"]
    runtime = Runtime(config)
    await runtime.start()
    memo["runtime"] = runtime
    logger.info("signet started (namespaces: %s)", ", ".join(config.namespaces) or "all")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()


@kopf.on.event("certificates.k8s.io", "v1", "podcertificaterequests")
async def pod_certificate_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    body = event["object"]
    memo["pacer"].handled("podcertificaterequests", body["metadata"].get("namespace"))
    _runtime(memo).pod_certificate_request_event(event.get("type"), dict(body))


@kopf.on.event("certificates.k8s.io", "v1", "certificatesigningrequests")
async def certificate_signing_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["pacer"].handled("certificatesigningrequests", None)
    _runtime(memo).certificate_signing_request_event(event.get("type"), dict(event["object"]))


@kopf.on.event("cert-manager.io", "v1", "certificaterequests")
async def certificate_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """cert-manager's requests; served only while its CRDs exist (kopf starts and stops the
    watch as they come and go, and warns of an unresolved resource meanwhile)."""
    body = event["object"]
    memo["pacer"].handled("certificaterequests", body["metadata"].get("namespace"))
    _runtime(memo).certificate_request_event(event.get("type"), dict(body))


@kopf.on.event("v1", "namespaces")
async def namespace(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).namespace_event(event.get("type"), dict(event["object"]))

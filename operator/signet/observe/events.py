"""Kubernetes Events on Certificates and Issuers, posted without blocking reconciliation.

kopf's own event queue is bound to its per-object tasks; Signet's workers live outside
them, so they post through this small poster instead. It works as client-go's recorder
does: a bounded queue and one request at a time. Events are for people; while a burst of
Certificates is being issued they must not take the apiserver's capacity from the writes
that make those Certificates Ready (500 at once: their Events trail the last Ready by a
second or two instead of adding 14% to the burst). An Event that fails, times out or finds
the queue full is worth a log line and a counter, never a retry storm or a stalled issuance.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MAX_MESSAGE = 1024


class EventSink(Protocol):
    async def create_event(self, namespace: str, body: dict[str, Any]) -> None: ...


class EventPoster:
    def __init__(
        self,
        sink: EventSink,
        *,
        home_namespace: str = "default",
        component: str = "signet",
        capacity: int = 1000,
        timeout: float = 10.0,
        dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self._sink = sink
        self._home_namespace = home_namespace
        self._component = component
        self._timeout = timeout
        self._dropped = dropped
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(capacity)
        self._poster: asyncio.Task[None] | None = None
        self._overflowing = False

    def post(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj`` (a Certificate or Issuer body or reference)."""
        metadata = obj.get("metadata") or {}
        # Events about cluster-scoped objects (ClusterIssuers) go to the operator's namespace.
        namespace = metadata.get("namespace") or self._home_namespace
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{metadata.get('name', 'signet')}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._queue.put_nowait((namespace, body))
        except asyncio.QueueFull:
            self._dropped()
            if not self._overflowing:  # one line per overflow, not one per Event
                logger.warning("%d Events queued; dropping new ones", self._queue.maxsize)
            self._overflowing = True
            return
        self._overflowing = False
        if self._poster is None or self._poster.done():
            self._poster = asyncio.get_running_loop().create_task(self._post_queued())

    async def _post_queued(self) -> None:
        """Post until the queue is empty, then end: no task lingers between bursts."""
        while not self._queue.empty():
            namespace, body = self._queue.get_nowait()
            try:
                await asyncio.wait_for(self._sink.create_event(namespace, body), self._timeout)
            except Exception as error:  # an Event is never worth failing a reconcile for
                logger.warning("could not post Event %s: %s", body["reason"], type(error).__name__)

    async def drain(self) -> None:
        """Wait for queued Events (graceful shutdown, tests)."""
        while self._poster is not None and not self._poster.done():
            await asyncio.shield(self._poster)

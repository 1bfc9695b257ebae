"""Kubernetes Events on Certificates and Issuers, posted without blocking reconciliation.

kopf's own event queue is bound to its per-object tasks; Signet's workers live outside
them, so they post through this small poster instead. Posting is fire-and-forget with a
bound on concurrent requests: an Event is worth a log line if it fails, never a retry
storm or a stalled issuance.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
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
        concurrency: int = 4,
    ) -> None:
        self._sink = sink
        self._home_namespace = home_namespace
        self._component = component
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

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
        task = asyncio.get_running_loop().create_task(self._send(namespace, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, body: dict[str, Any]) -> None:
        async with self._slots:
            try:
                await self._sink.create_event(namespace, body)
            except Exception as error:  # an Event is never worth failing a reconcile for
                logger.warning("could not post Event %s: %s", body["reason"], type(error).__name__)

    async def drain(self) -> None:
        """Wait for queued Events (graceful shutdown, tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

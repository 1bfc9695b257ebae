"""Kubernetes Events on Certificates and Issuers, posted without blocking reconciliation.

kopf's own event queue is bound to its per-object tasks; Signet's workers live outside
them, so they post through this small poster instead. It works as client-go's recorder
does: a bounded queue and one request at a time. Events are for people; while a burst of
Certificates is being issued they must not take the apiserver's capacity from the writes
that make those Certificates Ready (500 issued at once: 32 of their Events are posted
during the burst, the rest after the last Certificate is Ready). An Event that fails,
times out or finds the queue full is worth a log line and a counter, never a retry storm
or a stalled issuance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MAX_MESSAGE = 1024
OVERFLOW_WARNING_INTERVAL = 60.0


class EventSink(Protocol):
    async def create_event(self, namespace: str, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    """A queued Event, small: a burst of 10,000 issuances queues 10,000 of these while the
    apiserver is busy with the issuances themselves. The body is built when it is sent."""

    namespace: str
    involved: tuple[str | None, str | None, str | None, str | None, str | None]
    """apiVersion, kind, name, namespace, uid of the object the Event is about."""
    type: str
    reason: str
    message: str
    at: str


class EventPoster:
    def __init__(
        self,
        sink: EventSink,
        *,
        home_namespace: str = "default",
        component: str = "signet",
        capacity: int = 10_000,
        timeout: float = 10.0,
        dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self._sink = sink
        self._home_namespace = home_namespace
        self._component = component
        self._timeout = timeout
        self._dropped = dropped
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(capacity)
        self._poster: asyncio.Task[None] | None = None
        self._warned_at = -OVERFLOW_WARNING_INTERVAL

    def post(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj`` (a Certificate or Issuer body or reference)."""
        metadata = obj.get("metadata") or {}
        pending = _Pending(
            # Events about cluster-scoped objects (ClusterIssuers) go to the operator's namespace.
            namespace=metadata.get("namespace") or self._home_namespace,
            involved=(
                obj.get("apiVersion"),
                obj.get("kind"),
                metadata.get("name"),
                metadata.get("namespace"),
                metadata.get("uid"),
            ),
            type=type,
            reason=reason,
            message=message[:MAX_MESSAGE],
            at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self._dropped()
            now = time.monotonic()
            if now - self._warned_at >= OVERFLOW_WARNING_INTERVAL:
                self._warned_at = now
                logger.warning(
                    "%d Events queued; dropping new ones (signet_events_dropped_total)",
                    self._queue.maxsize,
                )
            return
        if self._poster is None or self._poster.done():
            self._poster = asyncio.get_running_loop().create_task(self._post_queued())

    def _body(self, pending: _Pending) -> dict[str, Any]:
        api_version, kind, name, namespace, uid = pending.involved
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{name or 'signet'}.{uuid.uuid4().hex[:12]}",
                "namespace": pending.namespace,
            },
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": pending.type,
            "reason": pending.reason,
            "message": pending.message,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": pending.at,
            "lastTimestamp": pending.at,
            "count": 1,
        }

    async def _post_queued(self) -> None:
        """Post until the queue is empty, then end: no task lingers between bursts."""
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            try:
                await asyncio.wait_for(
                    self._sink.create_event(pending.namespace, self._body(pending)), self._timeout
                )
            except Exception as error:  # an Event is never worth failing a reconcile for
                logger.warning("could not post Event %s: %s", pending.reason, type(error).__name__)

    async def drain(self) -> None:
        """Wait for queued Events (graceful shutdown, bounded by the caller; tests)."""
        while self._poster is not None and not self._poster.done():
            await asyncio.wait({self._poster})  # never cancels the poster, nor raises its end

    async def close(self, within: float) -> None:
        """Post what is queued for at most ``within`` seconds, then stop and drop the rest:
        a shutdown during a burst must end inside the pod's grace period, and an Event is
        not worth a SIGKILL."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self.drain()
        if self._poster is not None and not self._poster.done():
            self._poster.cancel()
            logger.warning("stopping with %d Events not posted", self._queue.qsize() + 1)

"""Kubernetes Events on Certificates and Issuers, posted without blocking reconciliation.

kopf's own event queue is bound to its per-object tasks; Signet's workers live outside
them, so they post through this small poster instead. It works as client-go's recorder
does: a bounded queue and one request at a time. Events are for people; while a burst of
Certificates is being issued they must not take the apiserver's capacity from the writes
that make those Certificates Ready (500 issued at once: 32 of their Events are posted
during the burst, the rest after the last Certificate is Ready). An Event that fails,
times out or finds the queue full is worth a log line and a counter, never a retry storm
or a stalled issuance.

Repeats are folded as client-go's EventCorrelator folds them: a Certificate that fails the
same way on every retry has one Event whose ``count`` grows and whose ``lastTimestamp``
moves, not one Event per attempt (which would fill etcd and bury every other Event of the
namespace). A repeat still waiting in the queue only bumps the waiting one; a repeat of an
Event already written patches it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from signet.api.times import timestamp

logger = logging.getLogger(__name__)

MAX_MESSAGE = 1024
OVERFLOW_WARNING_INTERVAL = 60.0
AGGREGATION_WINDOW = 600.0
"""Seconds after its last occurrence during which a repeat still folds into an Event:
client-go's window. A Certificate retrying at the capped backoff stays within it."""
CORRELATION_CACHE = 4096
"""Events remembered for folding (least recently repeated forgotten first): client-go's."""

Involved = tuple[str | None, str | None, str | None, str | None, str | None]
"""apiVersion, kind, name, namespace, uid of the object an Event is about."""


class EventSink(Protocol):
    """Where Events go: the apiserver in the operator, an in-memory sink in tests."""

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None: ...

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> object:
        """Merge-patch the Event. If it no longer exists (expired or deleted) this raises
        an exception whose ``status`` is 404, as ``KubeApi``'s ``ApiError`` does."""
        ...


@dataclass(slots=True)
class _Pending:
    """A queued Event, small: a burst of 10,000 issuances queues 10,000 of these while the
    apiserver is busy with the issuances themselves. The body is built when it is sent."""

    key: bytes
    """Digest of what makes two Events the same (see ``_key``)."""
    namespace: str
    involved: Involved
    type: str
    reason: str
    message: str
    first: str
    last: str
    count: int = 1


@dataclass(slots=True)
class _Written:
    """An Event this poster wrote, kept to fold repeats into it."""

    name: str
    count: int
    seen: float
    """Clock time of its last occurrence sent (the aggregation window runs from it)."""


def _key(involved: Involved, type: str, reason: str, message: str) -> bytes:
    """A fixed-size stand-in for everything that makes two Events the same: the LRU and the
    queue index keep these small digests, not messages of up to ``MAX_MESSAGE`` each."""
    text = repr((involved, type, reason, message))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class EventPoster:
    """Posts Events one at a time from a bounded queue, folding repeats into one Event whose
    count grows."""

    def __init__(
        self,
        sink: EventSink,
        *,
        home_namespace: str = "default",
        component: str = "signet",
        capacity: int = 10_000,
        timeout: float = 10.0,
        dropped: Callable[[], None] = lambda: None,
        window: float = AGGREGATION_WINDOW,
        remembered: int = CORRELATION_CACHE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` gives the Events' timestamps and runs the aggregation window (tests
        pass their own)."""
        self._sink = sink
        self._home_namespace = home_namespace
        self._component = component
        self._timeout = timeout
        self._dropped = dropped
        self._window = window
        self._remembered = remembered
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(capacity)
        self._queued: dict[bytes, _Pending] = {}
        self._written: collections.OrderedDict[bytes, _Written] = collections.OrderedDict()
        self._poster: asyncio.Task[None] | None = None
        self._warned_at = -OVERFLOW_WARNING_INTERVAL

    def post(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj`` (a Certificate or Issuer body or reference)."""
        metadata = obj.get("metadata") or {}
        involved: Involved = (
            obj.get("apiVersion"),
            obj.get("kind"),
            metadata.get("name"),
            metadata.get("namespace"),
            metadata.get("uid"),
        )
        message = message[:MAX_MESSAGE]
        key = _key(involved, type, reason, message)
        at = timestamp(datetime.datetime.fromtimestamp(self._clock(), datetime.UTC))
        waiting = self._queued.get(key)
        if waiting is not None:  # the same Event is still queued: it now says "twice"
            waiting.count += 1
            waiting.last = at
            return
        pending = _Pending(
            key=key,
            # Events about cluster-scoped objects (ClusterIssuers) go to the operator's namespace.
            namespace=metadata.get("namespace") or self._home_namespace,
            involved=involved,
            type=type,
            reason=reason,
            message=message,
            first=at,
            last=at,
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
        self._queued[key] = pending
        if self._poster is None or self._poster.done():
            self._poster = asyncio.get_running_loop().create_task(self._post_queued())

    def _body(self, pending: _Pending, name: str) -> dict[str, Any]:
        api_version, kind, involved_name, namespace, uid = pending.involved
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": pending.namespace},
            "involvedObject": {
                "apiVersion": api_version,
                "kind": kind,
                "name": involved_name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": pending.type,
            "reason": pending.reason,
            "message": pending.message,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": pending.first,
            "lastTimestamp": pending.last,
            "count": pending.count,
        }

    async def _send(self, pending: _Pending) -> None:
        """Patch the Event this one repeats, or create it (again, if it has expired)."""
        now = self._clock()
        written = self._written.get(pending.key)
        if written is not None and now - written.seen <= self._window:
            # Counted before the patch is known to land: if it fails, the next repeat's
            # patch carries the total, which is what the Event should say.
            written.count += pending.count
            written.seen = now
            self._written.move_to_end(pending.key)
            patch = {"count": written.count, "lastTimestamp": pending.last}
            try:
                await self._sink.patch_event(pending.namespace, written.name, patch)
                return
            except Exception as error:
                # Recognised by its status: this layer sits below the API client's.
                if getattr(error, "status", None) != 404:
                    raise
        involved_name = pending.involved[2]
        name = f"{involved_name or 'signet'}.{uuid.uuid4().hex[:12]}"
        # Remembered before the create is known to land: a create that timed out after
        # reaching the apiserver is patched by the next repeat, not duplicated (and one
        # that never landed answers that patch with 404, which creates it then).
        self._written[pending.key] = _Written(name, pending.count, now)
        self._written.move_to_end(pending.key)
        while len(self._written) > self._remembered:
            self._written.popitem(last=False)
        try:
            await self._sink.create_event(pending.namespace, self._body(pending, name))
        except Exception as error:
            # The name is ours alone: 409 means our create landed and the client, not told
            # so before its connection broke, sent it again.
            if getattr(error, "status", None) != 409:
                raise

    async def _post_queued(self) -> None:
        """Post until the queue is empty, then end: no task lingers between bursts."""
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if self._queued.get(pending.key) is pending:
                del self._queued[pending.key]  # a repeat from now on is a new occurrence
            try:
                await asyncio.wait_for(self._send(pending), self._timeout)
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

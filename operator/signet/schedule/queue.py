"""The one scheduler: a delaying work queue with bounded concurrency.

kopf would give us a timer or daemon per object, which is one asyncio task per Certificate:
10,000 tasks sleeping until their renewal time. Instead every object is a key in one heap,
and a fixed pool of workers takes keys as they come due. The semantics are those of
client-go's workqueue, which controller authors already know:

- a key is processed by at most one worker at a time;
- adding a key that is being processed marks it dirty, and it is processed once more after;
- adding a key that is already scheduled keeps the earlier of the two times, so waking
  early is possible (and harmless: the decision is cheap and idempotent) but a due key is
  never delayed by a later request.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    """A delaying work queue with client-go's semantics: a key is processed by one worker
    at a time, re-added keys wait for the running pass, the earliest due time wins."""

    def __init__(self, process: Callable[[K], Awaitable[None]], *, workers: int) -> None:
        self._process = process
        self._workers = workers
        self._heap: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, tuple[float, int]] = {}
        self._processing: set[K] = set()
        self._dirty: dict[K, float] = {}
        self._sequence = itertools.count()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        """Keys waiting (due now or later), not counting those being processed."""
        return len(self._scheduled)

    @property
    def due(self) -> int:
        """Keys whose time has come but that no worker has taken yet: the backlog."""
        now = time.monotonic()
        # A snapshot first: /metrics scrapes call this from the HTTP server's thread while
        # the event loop keeps scheduling.
        return sum(1 for due, _ in list(self._scheduled.values()) if due <= now)

    @property
    def in_flight(self) -> int:
        return len(self._processing)

    def busy(self, key: K) -> bool:
        """Whether a worker is processing ``key`` right now."""
        return key in self._processing

    def add(self, key: K, delay: float = 0.0) -> None:
        """Process ``key`` after ``delay`` seconds (or sooner if already scheduled sooner)."""
        due = time.monotonic() + max(delay, 0.0)
        if key in self._processing:
            self._dirty[key] = min(self._dirty.get(key, due), due)
            return
        current = self._scheduled.get(key)
        if current is not None and current[0] <= due:
            return
        entry = (due, next(self._sequence))
        self._scheduled[key] = entry
        heapq.heappush(self._heap, (*entry, key))
        if self._heap[0][2] == key:
            self._wakeup.set()
        if len(self._heap) > 2 * len(self._scheduled) + 1024:
            self._compact()

    def forget(self, key: K) -> None:
        """Drop a scheduled key (its object is gone). A running pass finishes normally."""
        self._scheduled.pop(key, None)
        self._dirty.pop(key, None)

    def _compact(self) -> None:
        self._heap = [(due, seq, key) for key, (due, seq) in self._scheduled.items()]
        heapq.heapify(self._heap)

    async def _next(self) -> K:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            while self._heap:
                due, seq, key = self._heap[0]
                if self._scheduled.get(key) != (due, seq):
                    heapq.heappop(self._heap)
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                del self._scheduled[key]
                return key
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            if self._heap:
                self._wakeup.set()  # let a sibling look at the next due key
            self._processing.add(key)
            try:
                await self._process(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("unhandled error while processing %s", key)
                self._dirty[key] = min(self._dirty.get(key, float("inf")), time.monotonic() + 5)
            finally:
                self._processing.discard(key)
                again = self._dirty.pop(key, None)
                if again is not None:
                    self.add(key, again - time.monotonic())

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"signet-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

"""The process-wide bound on KMS signatures: how many at once, and how many per second.

Cloud KMS quotas are per project and per minute; a renewal storm must spend them evenly
rather than all at once, and one slow KMS must not pile up unbounded in-flight calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from signet.kms.errors import KmsUnavailable


class SignLimiter:
    """Concurrency cap plus token-bucket rate limit for AsymmetricSign, per process.

    Share one instance between all signers of a process (and one event loop) so the
    limits hold for the process as a whole. ``rate`` is signatures per second
    (None = unlimited); ``burst`` how many may go back-to-back after an idle period.
    The bucket is a GCRA reservation, so waiters are served in arrival order without
    a lock (the event loop serialises the bookkeeping).
    """

    def __init__(
        self, rate: float | None = None, *, burst: int = 1, max_concurrency: int = 32
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        if burst < 1 or max_concurrency < 1:
            raise ValueError("burst and max_concurrency must be >= 1")
        self.rate = rate
        self.burst = burst
        self.max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._tat = 0.0
        self._last_send = 0.0
        self.in_flight = 0

    def _reserve(self, deadline: float) -> float | None:
        """Book the next send slot; returns the delay, or None if it is past ``deadline``."""
        if self.rate is None:
            return 0.0
        interval = 1.0 / self.rate
        now = time.monotonic()
        tat = max(self._tat, now)
        delay = max(0.0, tat - (self.burst - 1) * interval - now)
        if now + delay > deadline:
            return None
        self._tat = tat + interval
        return delay

    async def _space_out(self) -> None:
        """Keep actual sends an interval apart: a waiter that woke late must not let the
        next on-time send go right behind it (bursts above the rate the quota sees)."""
        if self.rate is None or self.burst > 1:
            return
        interval = 1.0 / self.rate
        while (wait := self._last_send + interval - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        self._last_send = time.monotonic()

    @asynccontextmanager
    async def slot(self, deadline: float, key_version: str) -> AsyncIterator[None]:
        """Hold one concurrency slot and one rate token for a single RPC attempt.

        Raises :class:`KmsUnavailable` when neither can be had before ``deadline``
        (a ``time.monotonic()`` value).
        """
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._semaphore.acquire()
        except TimeoutError:
            raise KmsUnavailable(
                key_version, f"no free signing slot (max {self.max_concurrency}) before deadline"
            ) from None
        self.in_flight += 1
        try:
            delay = self._reserve(deadline)
            if delay is None:
                raise KmsUnavailable(
                    key_version, f"sign rate limit ({self.rate:g}/s) would exceed deadline"
                )
            if delay > 0:
                await asyncio.sleep(delay)
            await self._space_out()
            yield
        finally:
            self.in_flight -= 1
            self._semaphore.release()

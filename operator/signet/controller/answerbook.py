"""What the request paths keep between passes of a request: whether it is backing off
after a failure or waiting for its issuer (`Retries`), and since when it has waited for
its answer (`Answers`, which also counts the answers). Kept apart from the life cycle in
`signet.controller.answering` so each can be read, and tested, on its own.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from signet.controller import certstatus
from signet.controller.certstatus import Failure
from signet.controller.issuers import IssuerId
from signet.observe.metrics import Metrics
from signet.reasons import Reason

K = TypeVar("K", bound=Hashable)


class Retries(Generic[K]):
    """Which requests are backing off after a failure, and which wait on which issuer.

    A request waiting out its backoff is not started early by watch events (its own
    status writes among them, or a busy requester's updates); one waiting on an issuer
    looks again the moment that issuer changes rather than at the end of its backoff.
    """

    def __init__(
        self,
        schedule: Callable[[K, float], None],
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self._schedule = schedule
        self._clock = clock
        self._failures: dict[K, Failure] = {}
        self._waiting: dict[IssuerId, set[K]] = {}

    def backing_off(self, ident: K) -> bool:
        """Whether a retry of ``ident`` is already scheduled for later."""
        failure = self._failures.get(ident)
        return failure is not None and failure.wait(0, self._clock()) is not None

    def failed(self, ident: K) -> Failure:
        """One more failed attempt: the next one is scheduled on the backoff schedule."""
        failure = certstatus.next_failure(self._failures.get(ident), 0, self._clock())
        self._failures[ident] = failure
        self._schedule(ident, (failure.next_retry - self._clock()).total_seconds())
        return failure

    def wait_for(self, issuer: IssuerId, ident: K) -> None:
        """``ident`` cannot go on until ``issuer`` changes (or its backoff ends)."""
        self._waiting.setdefault(issuer, set()).add(ident)

    def issuer_changed(self, issuer: IssuerId) -> None:
        """An issuer became ready, changed or went away: its waiting requests look now."""
        for ident in self._waiting.pop(issuer, set()):
            self._failures.pop(ident, None)
            self._schedule(ident, 0)

    def succeeded(self, ident: K) -> None:
        self._failures.pop(ident, None)

    def forget(self, ident: K) -> None:
        self._failures.pop(ident, None)
        for waiting in self._waiting.values():
            waiting.discard(ident)


class Answers(Generic[K]):
    """Answers written, counted by kind, answer and reason, and how long each request
    waited for its answer since this process first saw it."""

    def __init__(self, kind: str, metrics: Metrics | None) -> None:
        self._kind = kind
        self._metrics = metrics
        self._seen: dict[K, float] = {}
        """When this process first saw each request it has not answered (monotonic)."""
        if metrics is not None:
            metrics.requests_waiting.labels(kind).set_function(lambda: len(self._seen))

    def seen(self, ident: K) -> None:
        self._seen.setdefault(ident, time.monotonic())

    def first_seen(self, ident: K) -> float | None:
        """Taken before the answer is written: the watch may see the answer (and forget
        the request) before the write's own reply arrives."""
        return self._seen.get(ident)

    def forget(self, ident: K) -> None:
        self._seen.pop(ident, None)

    def answered(self, ident: K, answer: str, reason: Reason, seen: float | None) -> None:
        """An answer written: counted, with the time since ``seen`` (`first_seen`)."""
        self._seen.pop(ident, None)
        if self._metrics is None:
            return
        self._metrics.requests.labels(self._kind, answer, reason).inc()
        if seen is not None:
            self._metrics.request_seconds.labels(self._kind, answer).observe(
                time.monotonic() - seen
            )

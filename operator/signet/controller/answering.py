"""What the request paths answered through a status share: Kubernetes' own certificate
requests (PodCertificateRequest, CertificateSigningRequest) are each answered once, by one
write, and until then wait out failures on the one work queue.

Each path keeps its own reading of the request and its own status shape; the bookkeeping
around them is the same and lives here, so the two paths cannot drift apart in when they
retry, which issuer change wakes them, or how their answers are counted.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from signet.api.times import timestamp
from signet.controller import certstatus
from signet.controller.certstatus import Failure
from signet.controller.issuers import IssuerController, IssuerId, IssuerState
from signet.controller.kubeapi import KubeApi, Obj
from signet.observe.metrics import Metrics
from signet.reasons import Reason

K = TypeVar("K", bound=Hashable)


def condition(type_: str, reason: Reason, message: str, now: datetime.datetime) -> Obj:
    """A request's answer as a condition: always True (an answer is never withdrawn)."""
    return {
        "type": type_,
        "status": "True",
        "reason": str(reason),
        "message": message[:1024],
        "lastTransitionTime": timestamp(now),
    }


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


@dataclass(frozen=True)
class IssuerLookup:
    """What a decision needs of the issuer behind a signer."""

    state: IssuerState | None
    absent: bool
    """The API confirmed there is no such issuer (not merely "not seen yet")."""
    namespace_labels: dict[str, str] | None


NO_ISSUER = IssuerLookup(None, False, None)
"""For a request whose issuer is not to be looked up at all (its decision refuses it
without)."""


async def look_up_issuer(
    api: KubeApi,
    issuers: IssuerController,
    target: IssuerId,
    namespace: str | None,
    namespace_labels: Callable[[str], Awaitable[dict[str, str] | None]],
) -> IssuerLookup | None:
    """The issuer's resolved state, and for a ClusterIssuer the labels of ``namespace``
    (the requester's, if it has one). None while the issuer is seen but not resolved yet:
    the caller waits for it (`Retries.wait_for`), and its resolution wakes the request. An
    issuer this process has not seen is looked up once, so that a request naming one that
    does not exist is answered rather than left waiting."""
    state = issuers.states.get(target)
    absent = False
    if state is None:
        if target in issuers.pending:
            return None
        kind, issuer_namespace, name = target
        absent = await api.get_object(kind, issuer_namespace or None, name) is None
    labels = None
    if target[0] == "ClusterIssuer" and namespace is not None:
        labels = await namespace_labels(namespace)
    return IssuerLookup(state, absent, labels)

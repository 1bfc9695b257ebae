"""Hold kopf's next list page back until the handlers have taken the previous one.

kopf lists a resource a page at a time (``settings.watching.chunk_size``) but hands every
listed object to a per-object worker queue without waiting for the workers: the listing
runs ahead of the handling. At a restart over 10,000 requests (PodCertificateRequests,
CSRs, cert-manager's CertificateRequests: what kopf still watches) most of a listing is
parsed and parked at once, tens of MiB of small dicts and strings that Python's allocator
cannot give back afterwards because Signet's long-lived state was allocated between them.
Pacing keeps at most about a page in flight per listing. (Certificates and Secrets, the
kinds a cluster holds most of, are listed by `signet.controller.informer`, which needs no
pacing: it hands a page over before it asks for the next.)

It plugs into kopf through its documented extension point, a custom aiohttp session
(`kopf.AiohttpSession`), as a trace hook that runs before each request: a request for a
further page (one with a ``continue`` token) waits until the handlers have counted a
page's worth of events for that resource and namespace since the previous page arrived,
or until ``patience`` runs out, so a short page can never stall a listing.

A listing is paced for ``budget`` seconds at most. Its continue token is good only until
the apiserver's next etcd compaction (every five minutes by default); a listing paced for
longer than that (a cold start over a very large namespace, handlers slowed by the
issuing) gets 410 Gone on its next page, which kopf takes as a fatal watcher error and
stops the operator. Past the budget a listing's pages are no longer held back, but they
still go only as fast as kopf's event loop takes them, which a busy operator over a very
large namespace can make slower than a token lives. Then the 410 is raised as
`ListingExpired`, a payload error: kopf ends that watch stream on it and lists again from
a fresh snapshot, as client-go's reflector does. That keeps the operator running; it does
not make such a listing finish (a streaming list, with no token, would).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from types import SimpleNamespace

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)
Scope = tuple[str, str | None]
"""(plural, namespace or None for a cluster-wide listing)."""


def list_scope(url: URL) -> Scope | None:
    """The scope of a list request (not a watch), from its URL; None for anything else."""
    if "limit" not in url.query or url.query.get("watch") in ("true", "1"):
        return None
    parts = url.path.strip("/").split("/")
    namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None
    return parts[-1], namespace


PAGE_PATIENCE_S = 2.0
"""Longest a page waits for the handlers to take the one before."""
LISTING_BUDGET_S = 120.0
"""Longest a listing is paced: under half the five minutes its continue token lives,
leaving the rest of that time to read the remaining pages unpaced."""


class ListingExpired(aiohttp.ClientPayloadError):
    """A continued list request answered 410 Gone: the listing's snapshot was compacted
    away. A payload error, so kopf ends the stream without retrying the stale token and
    lists again from the start."""


class ListPacer:
    """Holds kopf's next list page until the handlers took the last one, so a restart does
    not parse a whole listing at once (for as long as the listing's budget allows)."""

    def __init__(
        self, page: int, patience: float = PAGE_PATIENCE_S, budget: float = LISTING_BUDGET_S
    ) -> None:
        self.page = page
        self.patience = patience
        self.budget = budget
        self._handled: Counter[Scope] = Counter()
        self._received_at: dict[Scope, int] = {}
        self._started: dict[Scope, float] = {}
        self._waiting: dict[Scope, tuple[int, asyncio.Event]] = {}
        self.waits = 0
        """Requests held back so far (for tests and curiosity)."""
        self.unpaced = 0
        """Pages let through unpaced because their listing ran past its budget."""
        self.expired = 0
        """Listings whose continue token expired (each is listed again by kopf)."""

    def handled(self, plural: str, namespace: str | None) -> None:
        """One watch event of ``plural`` in ``namespace`` reached a handler."""
        for scope in ((plural, namespace), (plural, None)):
            self._handled[scope] += 1
            waiting = self._waiting.get(scope)
            if waiting is not None and self._handled[scope] >= waiting[0]:
                waiting[1].set()

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_start.append(self._before_request)
        config.on_request_end.append(self._after_response)
        return config

    async def _before_request(
        self, _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        scope = list_scope(params.url)
        if scope is None:
            return
        if "continue" not in params.url.query:
            self._started[scope] = time.monotonic()  # a listing's first page
            return
        if time.monotonic() - self._started.get(scope, 0.0) > self.budget:
            self.unpaced += 1
            return
        target = self._received_at.get(scope, 0) + self.page
        if self._handled[scope] >= target:
            return
        arrived = asyncio.Event()
        self._waiting[scope] = (target, arrived)
        self.waits += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), self.patience)
        finally:
            self._waiting.pop(scope, None)

    async def _after_response(
        self, _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        scope = list_scope(params.url)
        if scope is None:
            return
        self._received_at[scope] = self._handled[scope]
        if params.response.status == 410 and "continue" in params.url.query:
            self.expired += 1
            plural, namespace = scope
            where = f"in {namespace}" if namespace else "cluster-wide"
            message = (
                f"the listing of {plural} {where} outlived its continue token (410 Gone); "
                "listing again from the start"
            )
            logger.warning(message)  # kopf ends the stream on it without a word
            raise ListingExpired(message)

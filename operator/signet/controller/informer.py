"""List and watch one kind of object for the runtime, one page and one event at a time.

Certificates and their Secrets are the two kinds a cluster holds by the ten thousand, and
the runtime's handling of one watched object is a synchronous call of microseconds. kopf's
path for a watched object is not: a worker task and queue per object, a memory record per
object recalled per event, loggers, a body wrapper, a patch and handler invocation
per event. At 100,000 Certificates that path, not Signet's decision, set the pace of a
restart, and a listing that paced itself on it outlived its continue token. So these two
kinds are watched here the way client-go's reflector watches: list in pages, hand every
listed object to the sink before asking for the next page (the handling is the
backpressure, so at most a page is held), then watch from the list's resourceVersion with
bookmarks, and list again when the apiserver says that version is gone (410). The issuers
are watched here too, though few: the runtime lists them, and the Secrets, before it starts
on the Certificates, an order kopf's independent watchers cannot promise.

A relisting reports each object as listed again (event type None, kopf's convention for a
listed object), never as deleted: an object deleted while the watch was down is not seen
gone until the next event about its name, as with kopf.

Observing does not act: whether this replica may act on what it sees (peering, sharding)
is the work queue's question, so a standby keeps its picture current and takes over
without a listing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

from signet.controller.kubeapi import (
    ApiError,
    KubeApi,
    Obj,
    collection_path,
    jittered_backoff,
)

logger = logging.getLogger(__name__)

Sink = Callable[[str | None, Obj], None]
"""Takes one event: its type (None for a listed object, else ``ADDED``, ``MODIFIED`` or
``DELETED``) and the object. It must not block: it is called on the event loop, and the
next page waits for it."""

LIST_PAGE = 50
"""Objects per list request, here and in kopf's listings (its ``chunk_size``). client-go
asks for 500; here larger pages spared the apiserver less than they cost the operator in
CPU and resident memory (``bench/README.md``, tenth round)."""
WATCH_SECONDS = 300
"""How long the apiserver keeps one watch request open (``timeoutSeconds``); the watch
is then opened again from the last version seen."""
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED"})


class VersionGone(Exception):
    """The apiserver no longer has the version asked for (410): list again."""


@dataclass(frozen=True)
class Collection:
    """What to watch: a kind's collection in one namespace (or all), optionally selected."""

    group: str
    """"" for the core group."""
    version: str
    plural: str
    namespace: str | None
    label_selector: str | None = None

    @property
    def path(self) -> str:
        return collection_path(self.group, self.version, self.plural, self.namespace)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.plural} {where}"


class Informer:
    """Keeps ``sink`` told about every object of a ``Collection`` until cancelled."""

    def __init__(
        self,
        api: KubeApi,
        collection: Collection,
        sink: Sink,
        *,
        page: int,
        kind: str,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self._api = api
        self._collection = collection
        self._sink = sink
        self._page = page
        self._kind = kind
        self._watch_seconds = watch_seconds
        self.listed = asyncio.Event()
        """Set once the first listing was handed over in full."""
        self.listings = 0
        """Listings finished, the first one included (for tests and curiosity)."""
        self._version: str | None = None
        """The last version handed over: where a watch goes on from; None: list first."""
        self._failures = 0

    async def run(self) -> None:
        """List, then watch from the last version seen, watch after watch; list again
        only when the apiserver no longer has that version. While it fails, back off
        (with jitter, up to `MAX_BACKOFF_S`); never give up."""
        while True:
            try:
                if self._version is None:
                    self._version = await self._list()
                    self.listings += 1
                    self.listed.set()
                    self._failures = 0
                await self._watch(self._version)
            except VersionGone:
                logger.info("%s: the watched version is gone; listing again", self._collection)
                self._version = None
            except ApiError as error:
                if error.status == 410:  # a watch refused outright rather than by an event
                    self._version = None
                    continue
                self._failures += 1
                delay = jittered_backoff(self._failures, FIRST_BACKOFF_S, MAX_BACKOFF_S)
                then = "listing" if self._version is None else "watching"
                logger.warning("%s: %s; %s again in %.1fs", self._collection, error, then, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        """Hand over every object, a page at a time; the list's resourceVersion."""
        params = {"limit": str(self._page)}
        if self._collection.label_selector:
            params["labelSelector"] = self._collection.label_selector
        while True:
            try:
                page = await self._api.request("GET", self._collection.path, params=params)
            except ApiError as error:
                if error.status == 410 and "continue" in params:
                    logger.warning(
                        "the listing of %s outlived its continue token (410 Gone; its snapshot "
                        "was compacted away); listing again from the start",
                        self._collection,
                    )
                    raise VersionGone from None
                raise
            for item in page.get("items") or ():
                # a list's items carry no kind and apiVersion; watch events' objects do
                item["kind"], item["apiVersion"] = self._kind, self._collection.api_version
                self._hand_over(None, item)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return str(metadata.get("resourceVersion") or "")
            params = {**params, "continue": token}

    async def _watch(self, version: str) -> None:
        """Hand over every change after ``version``, watch after watch, until the version
        is gone (`VersionGone`) or a watch fails (`ApiError`); the last version handed over
        is kept for the next watch."""
        while True:
            params = {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": version,
                "timeoutSeconds": str(self._watch_seconds),
            }
            if self._collection.label_selector:
                params["labelSelector"] = self._collection.label_selector
            stream = self._api.watch(self._collection.path, params, self._watch_seconds + 30)
            async with aclosing(stream) as events:
                async for event in events:
                    self._version = version = self._take(event, version)
                    self._failures = 0

    def _take(self, event: Obj, version: str) -> str:
        """One watch event handed over; the version to watch from after it."""
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                raise VersionGone
            raise ApiError(
                int(body.get("code") or 0),
                str(body.get("reason") or "Error"),
                str(body.get("message") or "error event in the watch"),
            )
        seen = str((body.get("metadata") or {}).get("resourceVersion") or version)
        if kind in EVENT_TYPES:
            self._hand_over(kind, body)
        return seen

    def _hand_over(self, kind: str | None, body: Obj) -> None:
        """One object to the sink; a failure there is logged (the object named, never its
        content) and does not stop the others."""
        try:
            self._sink(kind, body)
        except Exception:
            metadata = body.get("metadata") or {}
            name = f"{metadata.get('namespace') or ''}/{metadata.get('name')}".lstrip("/")
            logger.exception("%s: handling %s %s failed", self._collection, self._kind, name)

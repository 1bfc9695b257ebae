"""Sharding across replicas: this replica's membership Lease, the live members, and which
keys are ours (``signet run --shards auto``).

Each replica holds one coordination.k8s.io/v1 Lease in the operator namespace, labelled as
a shard member, and renews it every third of its duration; it lists the members' Leases
every second (and again the moment a peer's lease would run out, so a lost replica's share
is taken over within the lease duration). What counts as alive, when this replica may act
and who owns a key are decided in `signet.decisions.shards`, which also gives the argument
why no two replicas sign for one object.

Leases not renewed for an hour (replicas gone for good: a pod replaced, not restarted) are
deleted by whichever member lists them first, on the condition that they did not change.

Lease calls go through a client of their own with short timeouts: the shared one retries
for up to half a minute, far past the renew deadline, and a renewal that comes back that
late is worth nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from signet.controller.kubeapi import MERGE_PATCH, ApiError, KubeApi, Obj
from signet.decisions.shards import LeaseView, Membership, Timing, abandoned, owner

logger = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
MEMBER_LABEL = "signet.dev/shard-group"
"""On every member's Lease; its value keeps installations that serve different namespaces
(and share an operator namespace) apart."""


def group_of(namespaces: list[str]) -> str:
    """The shard group of an installation: the namespaces it serves, hashed to a label."""
    if not namespaces:
        return "cluster"
    return "ns-" + hashlib.sha256(",".join(sorted(namespaces)).encode()).hexdigest()[:12]


def lease_name(replica: str) -> str:
    """A valid object name for any replica id (pod names already are; host+pid may not be)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", replica.lower()).strip("-")[:40].strip("-")
    return f"signet-shard-{slug}-{hashlib.sha256(replica.encode()).hexdigest()[:8]}"


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_view(body: Obj) -> LeaseView:
    spec = body.get("spec") or {}
    return LeaseView(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration=float(spec.get("leaseDurationSeconds") or 0),
    )


class Shards:
    """This replica's membership; `owns` is asked before every pass."""

    def __init__(
        self,
        replica: str,
        namespace: str,
        group: str,
        timing: Timing,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self.timing = timing
        self.membership = Membership(replica, timing)
        self._namespace = namespace
        self._group = group
        self._name = lease_name(replica)
        self._on_change = on_change
        self._clock = clock
        self._members: tuple[str, ...] = (replica,)
        self._view: tuple[bool, tuple[str, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        seconds = timing.renew_interval
        self._api = KubeApi(
            connections=2, timeout=seconds, retry_deadline=seconds, attempts=2, max_backoff=1.0
        )

    @property
    def members(self) -> tuple[str, ...]:
        """The members keys are hashed over, as of the last look."""
        return self._members

    def acting(self) -> bool:
        return self.membership.acting(self._clock())

    def owns(self, key: str) -> bool:
        """Whether this replica may act on ``key`` now: it is not fenced, has waited out its
        join, and wins the key among the members."""
        return self.acting() and owner(key, self._members) == self.replica

    async def start(self) -> None:
        await self._renew()
        await self._poll()
        self._task = asyncio.create_task(self._loop(), name="signet-shards")

    async def stop(self) -> None:
        """Give the lease up (renew it for one second, as client-go's leader election
        releases), so that peers take over at once rather than after it runs out. Called
        once nothing acts any more (the work queue is stopped first)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        spec = {
            "holderIdentity": self.replica,
            "leaseDurationSeconds": 1,
            "renewTime": _micro_time(datetime.datetime.now(datetime.UTC)),
        }
        try:
            await self._api.request(
                "PATCH", self._path(self._name), {"spec": spec}, content_type=MERGE_PATCH
            )
        except ApiError as error:
            logger.warning("shard lease %s not released: %s", self._name, error)
        await self._api.close()

    def _path(self, name: str | None = None) -> str:
        path = LEASES.format(namespace=quote(self._namespace))
        return f"{path}/{quote(name)}" if name else path

    async def _loop(self) -> None:
        next_renew = self._clock() + self.timing.renew_interval
        while True:
            if self._clock() >= next_renew:
                sent = self._clock()
                next_renew = sent + (
                    self.timing.renew_interval if await self._renew() else self.timing.poll
                )
            await self._poll()
            now = self._clock()
            wake = min(now + self.timing.poll, next_renew)
            expiry = self.membership.next_expiry(now)
            if expiry is not None:
                wake = min(wake, expiry + 0.01)
            await asyncio.sleep(max(wake - now, 0.0))

    async def _renew(self) -> bool:
        sent = self._clock()
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        spec: dict[str, Any] = {
            "holderIdentity": self.replica,
            "leaseDurationSeconds": round(self.timing.lease_seconds),
            "renewTime": now,
        }
        try:
            try:
                await self._api.request(
                    "PATCH", self._path(self._name), {"spec": spec}, content_type=MERGE_PATCH
                )
            except ApiError as error:
                if error.status != 404:
                    raise
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self._name,
                        "labels": {
                            MEMBER_LABEL: self._group,
                            "app.kubernetes.io/managed-by": "signet",
                        },
                    },
                    "spec": {**spec, "acquireTime": now},
                }
                await self._api.request("POST", self._path(), body)
        except ApiError as error:
            logger.warning("shard lease %s not renewed: %s", self._name, error)
            self._look()
            return False
        self.membership.renewed(sent, self._clock())
        self._look()
        return True

    async def _poll(self) -> None:
        try:
            listing = await self._api.request(
                "GET", self._path(), params={"labelSelector": f"{MEMBER_LABEL}={self._group}"}
            )
        except ApiError as error:
            logger.warning("shard members not listed: %s", error)
        else:
            now = datetime.datetime.now(datetime.UTC)
            items: list[Obj] = []
            for item in listing.get("items") or []:
                if abandoned(str((item.get("spec") or {}).get("renewTime") or ""), now):
                    await self._delete_abandoned(item)
                else:
                    items.append(item)
            self.membership.observe((lease_view(item) for item in items), self._clock())
        self._look()

    async def _delete_abandoned(self, item: Obj) -> None:
        """Lease litter of replicas gone for good (pods replaced after a crash). Deleted on
        the condition that nobody renewed it since it was listed."""
        metadata = item["metadata"]
        precondition = {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": precondition}
        try:
            await self._api.request("DELETE", self._path(metadata["name"]), body)
        except ApiError as error:
            if error.status not in (404, 409):
                logger.warning("abandoned shard lease %s not deleted: %s", metadata["name"], error)
        else:
            logger.info("deleted abandoned shard lease %s", metadata["name"])

    def _look(self) -> None:
        """Refresh the members and tell the runtime when what this replica owns changed."""
        now = self._clock()
        self._members = self.membership.members(now)
        view = (self.membership.acting(now), self._members)
        if view == self._view:
            return
        before, self._view = self._view, view
        if before is None or before[0] != view[0]:
            logger.warning(
                "shards: this replica (%s) %s",
                self.replica,
                "acts on its share" if view[0] else "does not act (joining, or its lease lapsed)",
            )
        logger.info("shards: members %s", ", ".join(view[1]))
        self._on_change()

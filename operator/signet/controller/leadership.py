"""May this replica act? kopf peering decides; this makes Signet's own queue obey it.

With ``--peering``, kopf pauses its watch streams while a live peer has a higher priority.
Signet's work queue, however, also holds renewals and retries that kopf knows nothing
about, so a replica that lost leadership would keep renewing from memory. Workers ask this
gate first; it reads the same peering object kopf writes (``status: {peer: {priority,
lifetime, lastseen}}``) and says yes only while our priority is the highest alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from signet.controller.kubeapi import ApiError, KubeApi

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0
JOIN_GRACE = 3 * CHECK_INTERVAL
"""How long a replica that joins live peers stays standby: long enough for the one acting
to read the peering again and stand down if the newcomer outranks it. Without it both
act until the incumbent's next check, and both sign the same Certificates."""


def _live_priorities(status: dict[str, Any], now: datetime.datetime) -> list[int]:
    live = []
    for peer in status.values():
        if not isinstance(peer, dict):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
            deadline = lastseen + datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
            if deadline > now:
                live.append(int(peer.get("priority", 0)))
        except (KeyError, ValueError, TypeError):
            continue
    return live


def is_leader(status: dict[str, Any], priority: int, now: datetime.datetime) -> bool:
    """True when no live peer in a kopf peering status outranks ``priority``."""
    return all(other <= priority for other in _live_priorities(status, now))


def may_start_leading(
    status: dict[str, Any], priority: int, now: datetime.datetime, joined_for: float
) -> bool:
    """Whether a replica that is not acting yet may begin: it leads, and either it has
    been in the peering for `JOIN_GRACE` seconds or no live peer has another priority.
    The status does not say which entry is this replica's own, so a live peer of the same
    priority counts as this one; such a peer would lead beside it anyway (`is_leader`)."""
    live = _live_priorities(status, now)
    if any(other > priority for other in live):
        return False
    return all(other == priority for other in live) or joined_for >= JOIN_GRACE


class LeaderGate:
    """Whether this replica may act: always without peering, else while kopf's peering says
    no higher-priority peer is alive."""

    def __init__(
        self,
        api: KubeApi,
        peering: str | None,
        namespace: str | None,
        priority: int,
        *,
        on_leader: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_leader = on_leader
        self._api = api
        self._peering = peering
        self._namespace = namespace
        self._priority = priority
        self.leader = peering is None
        self._task: asyncio.Task[None] | None = None
        self._joined = time.monotonic()

    async def start(self) -> None:
        if self._peering is None:
            return
        await self._check()
        self._task = asyncio.create_task(self._loop(), name="signet-leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            await self._check()

    async def _check(self) -> None:
        try:
            body = await self._api.get_peering(self._peering or "", self._namespace)
        except ApiError as error:
            logger.warning("cannot read peering object: HTTP %s; not acting", error.status)
            self.leader = False
            return
        status = (body or {}).get("status") or {}
        now = datetime.datetime.now(datetime.UTC)
        if self.leader:
            leader = is_leader(status, self._priority, now)
        else:
            joined_for = time.monotonic() - self._joined
            leader = may_start_leading(status, self._priority, now, joined_for)
        if leader != self.leader:
            logger.warning(
                "peering %s: this replica is now %s",
                self._peering,
                "active" if leader else "standby",
            )
        self.leader, became = leader, leader and not self.leader
        if became:
            self._on_leader()

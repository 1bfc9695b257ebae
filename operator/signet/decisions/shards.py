"""Who acts on which object when several replicas shard the work: rendezvous hashing over
the live members, and when a member may act at all (fencing).

Every replica watches every object; each acts only on the keys it owns. Ownership is
rendezvous (highest-random-weight) hashing: a key belongs to the member whose hash of
(member, key) is highest. Adding a member moves to it only the keys it now wins; removing
one moves only that member's keys, spread over the rest. No table is shared or stored: each
replica computes the same answer from the same member list.

Membership is one coordination.k8s.io Lease per replica (`signet.controller.shards`); this
module only judges what was observed, against a monotonic clock the caller passes, so it
is tested with a fake one.

Why no two replicas sign for the same object, given a renew interval R, a renew deadline
D and a lease duration L with R < D < L (R = L/3, D = 2L/3), and members polled every P:

- Loss (crash, partition). A replica counts its renewal from the moment it *sent* the
  request; once D has passed without a successful one it owns nothing (`Membership.acting`
  is read at every pass, not on a timer, so a replica stuck on a hung request fences all
  the same). A peer counts the same lease alive for L from the moment it *saw* the renewal,
  which is never before it was sent; so the peer takes over no earlier than L - D after the
  replica stopped. That margin (a third of L) covers a pass started just before the fence.
  Only durations measured on one clock are compared: no two machines' clocks meet.
- Gain (a member joins, or comes back after a fence). Old owners stop acting on the keys
  the new member wins as soon as they see its lease (within P of its first renewal). The
  new member acts only after R has passed since that renewal, so every old owner has seen
  it and has had R - P to finish a pass it started before; a replica coming back from a
  fence starts over as a new member for the same reason (its old share was taken over).
- A lease seen for the first time counts as alive for L from that moment, whatever its
  renewTime says: a replica starting up cannot tell a live peer's clock from a dead one's,
  and wrongly believing a peer alive only leaves its keys idle for L, while wrongly
  believing it dead would sign twice.

What a pass does once it has started is not re-checked: the margins above assume a pass
reaches its signature within R - P of the moment its replica learned it should stop.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

ABANDONED = datetime.timedelta(hours=1)
"""A Lease not renewed for this long (by the writer's clock against ours: no skew is that
large) belonged to a replica that is gone for good (a pod replaced, not restarted)."""


def weight(member: str, key: str) -> int:
    """The member's random-looking, stable weight for a key (64 bits of BLAKE2b)."""
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_key(kind: str, namespace: str, name: str) -> str:
    """What is hashed for a work-queue key. The name, not the UID: a renewal or retry key
    carries no UID (a pass may not even hold the body), and a Certificate deleted and made
    again under its name keeps its owner, the one replica that writes its Secret."""
    return f"{kind}/{namespace}/{name}"


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member that owns ``key``: the highest weight, ties broken by name; None when
    there are no members."""
    return max(members, key=lambda member: (weight(member, key), member), default=None)


@dataclass(frozen=True)
class Timing:
    """The lease's clock: renew every third of the duration, fence at two thirds."""

    lease_seconds: float = 15.0
    poll_seconds: float = 1.0
    """How often members are listed (and at each peer's expiry, to take over promptly)."""

    def __post_init__(self) -> None:
        if self.lease_seconds < 3:
            raise ValueError("the shard lease must last at least 3 seconds")

    @property
    def renew_interval(self) -> float:
        return self.lease_seconds / 3

    @property
    def renew_deadline(self) -> float:
        return self.lease_seconds * 2 / 3

    @property
    def join_wait(self) -> float:
        """How long a new (or returning) member waits before acting: every old owner has
        seen it by then (see the module docstring)."""
        return self.renew_interval

    @property
    def poll(self) -> float:
        return min(self.poll_seconds, self.renew_interval)


@dataclass(frozen=True)
class LeaseView:
    """What a member's Lease says, as listed."""

    holder: str
    renew_time: str
    """Compared only for change, never as a time (another machine's clock)."""
    duration: float


def abandoned(
    renew_time: str, now: datetime.datetime, after: datetime.timedelta = ABANDONED
) -> bool:
    """Whether a Lease's renewTime is so old that the Lease is only litter: deleted, and
    not counted as alive even on first sight. An unreadable time is not judged."""
    try:
        renewed = datetime.datetime.fromisoformat(renew_time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if renewed.tzinfo is None:
        return False
    return now - renewed > after


@dataclass
class _Seen:
    renew_time: str
    at: float
    duration: float


@dataclass
class Membership:
    """This replica's view of the members, and whether it may act now."""

    me: str
    timing: Timing = field(default_factory=Timing)
    _renewed_at: float | None = None
    _acting_since: float | None = None
    _peers: dict[str, _Seen] = field(default_factory=dict)

    def renewed(self, sent_at: float, done_at: float) -> None:
        """Our lease was renewed by a request sent at ``sent_at`` that succeeded at
        ``done_at``. After a lapse (never renewed, or fenced in between) membership starts
        over: the join wait runs from ``done_at``, when peers can first see it."""
        lapsed = self._renewed_at is None or sent_at - self._renewed_at >= (
            self.timing.renew_deadline
        )
        if lapsed:
            self._acting_since = done_at + self.timing.join_wait
        self._renewed_at = sent_at

    def fenced(self, now: float) -> bool:
        """True when the last renewal is older than the renew deadline (or there was none)."""
        return self._renewed_at is None or now - self._renewed_at >= self.timing.renew_deadline

    def acting(self, now: float) -> bool:
        """Whether this replica may act on its share now."""
        return not self.fenced(now) and self._acting_since is not None and now >= self._acting_since

    def observe(self, leases: Iterable[LeaseView], now: float) -> None:
        """Take a listing of the members' Leases. A renewTime that changed restarts that
        peer's clock, for the duration the Lease now gives (a replica shutting down gives
        it up by renewing it for one second). A Lease that vanished from the listing keeps
        its peer alive until its time runs out: whoever deleted it, the replica may still be
        acting, and will only notice at its next renewal."""
        seen = {h: s for h, s in self._peers.items() if now < s.at + s.duration}
        for lease in leases:
            if not lease.holder or lease.holder == self.me:
                continue
            before = self._peers.get(lease.holder)
            if before is not None and before.renew_time == lease.renew_time:
                seen[lease.holder] = before
            else:
                seen[lease.holder] = _Seen(lease.renew_time, now, lease.duration)
        self._peers = seen

    def peers(self, now: float) -> list[str]:
        """Other members whose lease has not run out by our clock."""
        return sorted(h for h, s in self._peers.items() if now < s.at + s.duration)

    def members(self, now: float) -> tuple[str, ...]:
        """Everyone keys are hashed over: the live peers and this replica."""
        return tuple(sorted({*self.peers(now), self.me}))

    def next_expiry(self, now: float) -> float | None:
        """When the next live peer's lease runs out, if any: the moment to look again."""
        ends = [s.at + s.duration for s in self._peers.values() if now < s.at + s.duration]
        return min(ends, default=None)

"""Sharding decisions: rendezvous ownership (balance, minimal movement) and when a member
may act (join wait, fencing), on a fake monotonic clock."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest

from signet.controller.shards import group_of, lease_name, lease_view
from signet.decisions.shards import (
    LeaseView,
    Membership,
    Timing,
    abandoned,
    owner,
    shard_key,
)

KEYS = [shard_key("Certificate", f"ns{i % 7}", f"cert-{i}") for i in range(3000)]


def test_owner_is_stable_and_independent_of_member_order() -> None:
    members = ["a", "b", "c"]
    assert [owner(k, members) for k in KEYS[:50]] == [owner(k, members[::-1]) for k in KEYS[:50]]
    assert owner("x", []) is None
    assert owner("x", ["only"]) == "only"


def test_keys_spread_evenly() -> None:
    members = ["signet-0", "signet-1", "signet-2"]
    counts = Counter(owner(k, members) for k in KEYS)
    fair = len(KEYS) / len(members)
    assert set(counts) == set(members)
    assert all(abs(n - fair) < 0.1 * fair for n in counts.values()), counts


def test_a_joining_member_takes_only_its_share() -> None:
    before = {k: owner(k, ["a", "b", "c"]) for k in KEYS}
    after = {k: owner(k, ["a", "b", "c", "d"]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "d" for k in moved)  # nothing moves between the old members
    assert abs(len(moved) - len(KEYS) / 4) < 0.1 * len(KEYS) / 4


def test_a_leaving_member_gives_up_only_its_own_keys() -> None:
    before = {k: owner(k, ["a", "b", "c"]) for k in KEYS}
    after = {k: owner(k, ["a", "c"]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert moved and all(before[k] == "b" for k in moved)
    assert len(moved) == sum(1 for k in KEYS if before[k] == "b")


def _lease(holder: str, renew: str, duration: float = 15) -> LeaseView:
    return LeaseView(holder, renew, duration)


def test_a_new_member_acts_only_after_the_join_wait() -> None:
    timing = Timing(15)
    me = Membership("me", timing)
    assert not me.acting(0)  # never renewed
    me.renewed(sent_at=100, done_at=100.2)
    assert not me.acting(100.2)
    assert not me.acting(100.2 + timing.join_wait - 0.01)
    assert me.acting(100.2 + timing.join_wait)


def test_fenced_at_the_renew_deadline_before_peers_can_take_over() -> None:
    timing = Timing(15)
    me = Membership("me", timing)
    me.renewed(0, 0)
    sent = 10.0
    me.renewed(sent, sent + 0.1)
    assert me.acting(sent + timing.renew_deadline - 0.01)
    assert not me.acting(sent + timing.renew_deadline)  # fenced, without any call returning
    # A peer saw that renewal no earlier than it was sent: it counts the lease alive until
    # at least sent + lease_seconds, a third of the lease after the fence.
    peer = Membership("peer", timing)
    peer.observe([_lease("me", "t1")], now=sent)
    assert "me" in peer.peers(sent + timing.renew_deadline)
    assert "me" in peer.peers(sent + timing.lease_seconds - 0.01)
    assert "me" not in peer.peers(sent + timing.lease_seconds)
    assert peer.next_expiry(sent) == sent + timing.lease_seconds


def test_renewing_on_time_keeps_acting_and_a_lapse_starts_over() -> None:
    timing = Timing(15)
    me = Membership("me", timing)
    me.renewed(0, 0)
    for second in range(5, 60, 5):  # every renew interval
        me.renewed(second, second + 0.5)
        assert me.acting(second + 0.5)
    me.renewed(70, 70.5)  # 15 s after the last: it was fenced in between
    assert not me.acting(70.5)
    assert me.acting(70.5 + timing.join_wait)


def test_peers_alive_by_our_clock_whatever_their_renew_time_says() -> None:
    timing = Timing(15)
    me = Membership("me", timing)
    # First sight of a lease counts as a renewal now (its renewTime is another clock).
    me.observe([_lease("a", "1999-01-01T00:00:00Z"), _lease("me", "x")], now=50)
    assert me.peers(50) == ["a"]
    assert me.members(50) == ("a", "me")
    me.observe([_lease("a", "1999-01-01T00:00:00Z")], now=60)  # unchanged: clock runs on
    assert me.peers(64.9) == ["a"] and me.peers(65) == []
    me.observe([_lease("a", "2026")], now=64)  # renewed: alive for another lease
    assert me.peers(78) == ["a"]
    me.observe([], now=70)  # deleted by someone: it may still act until its time is up
    assert me.peers(78) == ["a"] and me.peers(79) == []
    me.observe([_lease("a", "2027")], now=80)
    me.observe([_lease("a", "2028", duration=1)], now=81)  # given up at shutdown
    assert me.peers(81.5) == ["a"] and me.peers(82) == []
    me.observe([_lease("", "2029")], now=83)  # no holder: no member
    assert me.peers(83) == []


def test_timing_rejects_a_lease_too_short_to_fence() -> None:
    with pytest.raises(ValueError):
        Timing(2)
    assert Timing(15).poll == 1.0
    assert Timing(3).poll == 1.0
    assert Timing(15).renew_interval < Timing(15).renew_deadline < Timing(15).lease_seconds


def test_lease_names_and_groups_are_valid_labels() -> None:
    name = lease_name("Host_Name.example-12345")
    assert name.startswith("signet-shard-host-name-example-12345-")
    assert len(lease_name("x" * 300)) <= 63
    assert lease_name("a") != lease_name("A")
    assert group_of([]) == "cluster"
    assert group_of(["b", "a"]) == group_of(["a", "b"]) != group_of(["a"])
    assert len(group_of(["a"])) <= 63
    view = lease_view(
        {"spec": {"holderIdentity": "p", "renewTime": "t", "leaseDurationSeconds": 9}}
    )
    assert view == LeaseView("p", "t", 9.0)
    assert lease_view({}).holder == ""


def test_only_a_lease_unrenewed_for_an_hour_is_litter() -> None:
    now = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    assert abandoned("2026-12-01T10:59:59.000000Z", now)
    assert not abandoned("2026-12-01T11:30:00.000000Z", now)
    assert not abandoned("2026-12-01T13:00:00.000000Z", now)  # a clock ahead of ours
    assert not abandoned("", now) and not abandoned("yesterday", now)
    assert not abandoned("2026-12-01T10:00:00", now)  # no zone: not judged

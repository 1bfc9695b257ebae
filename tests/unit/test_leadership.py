"""Which replica acts, read from kopf's peering status."""

from __future__ import annotations

import asyncio
import datetime

from signet.controller.leadership import JOIN_GRACE, LeaderGate, is_leader, may_start_leading

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def _peer(priority: int, seconds_ago: int, lifetime: int = 60) -> dict[str, object]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat(),
    }


def test_highest_live_priority_leads() -> None:
    status = {"a": _peer(10, 5), "b": _peer(20, 5)}
    assert is_leader(status, 20, NOW)
    assert not is_leader(status, 10, NOW)


def test_dead_peers_do_not_count_and_garbage_is_ignored() -> None:
    status = {"a": _peer(99, 120), "b": _peer(10, 5), "c": "junk", "d": {"priority": 100}}
    assert is_leader(status, 10, NOW)


def test_a_newcomer_that_outranks_the_acting_peer_waits_for_it_to_stand_down() -> None:
    """Until the incumbent reads the peering again, both would act and both would sign."""
    status = {"old": _peer(10, 1), "new": _peer(20, 0)}
    assert not may_start_leading(status, 20, NOW, joined_for=JOIN_GRACE - 0.1)
    assert may_start_leading(status, 20, NOW, joined_for=JOIN_GRACE)
    assert not may_start_leading(status, 10, NOW, joined_for=3600)  # outranked: never
    alone = {"new": _peer(20, 0), "gone": _peer(10, 120)}
    assert may_start_leading(alone, 20, NOW, joined_for=0)  # no live peer to wait for


def test_alone_leads() -> None:
    assert is_leader({}, 0, NOW)


def test_taking_over_resumes_what_the_standby_held_back_at_once() -> None:
    """A standby puts keys back for a later look; when it becomes the leader they are due
    at once, not after the standby's re-check interval."""
    live = datetime.datetime.now(datetime.UTC)
    statuses = [
        {"a": {"priority": 99, "lifetime": 60, "lastseen": live.isoformat()}},
        {},
        {},
    ]

    class Peering:
        async def get_peering(self, name: str, namespace: str | None) -> dict[str, object]:
            return {"status": statuses.pop(0)}

    took_over: list[bool] = []
    gate = LeaderGate(
        Peering(),  # type: ignore[arg-type]  # the one call the gate makes
        "signet",
        None,
        10,
        on_leader=lambda: took_over.append(True),
    )

    async def checks() -> list[bool]:
        seen = []
        for _ in range(3):
            await gate._check()
            seen.append(gate.leader)
        return seen

    assert asyncio.run(checks()) == [False, True, True]
    assert took_over == [True]

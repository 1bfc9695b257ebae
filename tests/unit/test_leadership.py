"""Which replica acts, read from kopf's peering status."""

from __future__ import annotations

import datetime

from signet.controller.leadership import is_leader

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


def test_alone_leads() -> None:
    assert is_leader({}, 0, NOW)

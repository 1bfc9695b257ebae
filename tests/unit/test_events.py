"""The Event poster: one request at a time, bounded, never in the way of a reconcile, and
one Event (counted) for a failure repeated on every retry.

The sink here records what it is given and keeps the Events it holds, as the apiserver
would; the real sink (KubeApi against the apiserver) is exercised by every operator test
that waits for an Event.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from typing import Any

import pytest

from signet.controller.kubeapi import ApiError
from signet.observe.events import EventPoster

CERT = {
    "apiVersion": "signet.dev/v1alpha1",
    "kind": "Certificate",
    "metadata": {"name": "web", "namespace": "team-a", "uid": "u-1"},
}


class RecordingSink:
    def __init__(self, delay: float = 0.0, fail_reasons: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.fail_reasons = fail_reasons
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        """The Events as the apiserver would hold them now (created, then patched)."""
        self.in_flight = 0
        self.most_in_flight = 0
        self.requested = asyncio.Event()

    async def _request(self, reason: str) -> None:
        self.requested.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if reason in self.fail_reasons:
                raise ConnectionResetError("apiserver went away")
        finally:
            self.in_flight -= 1

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._request(body["reason"])
        self.posted.append((namespace, body))
        self.stored[namespace, body["metadata"]["name"]] = copy.deepcopy(body)

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        stored = self.stored.get((namespace, name))
        await self._request(stored["reason"] if stored else "")
        self.patches.append((namespace, name, patch))
        if stored is None:
            raise ApiError(404, "Not Found", f'events "{name}" not found')
        stored.update(patch)
        return copy.deepcopy(stored)

    def events(self) -> list[dict[str, Any]]:
        return list(self.stored.values())


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _post_issued(poster: EventPoster, count: int) -> None:
    for i in range(count):
        poster.post(CERT, type="Normal", reason="Issued", message=f"serial {i}")


def test_events_are_posted_one_at_a_time_in_order() -> None:
    sink = RecordingSink(delay=0.001)

    async def burst() -> None:
        poster = EventPoster(sink)
        _post_issued(poster, 20)
        await poster.drain()

    asyncio.run(burst())
    assert sink.most_in_flight == 1
    assert [body["message"] for _, body in sink.posted] == [f"serial {i}" for i in range(20)]
    namespace, body = sink.posted[0]
    assert namespace == "team-a"
    assert body["involvedObject"] == {
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "Certificate",
        "name": "web",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert body["source"] == {"component": "signet"}


def test_a_full_queue_drops_and_counts_new_events_without_blocking() -> None:
    sink = RecordingSink(delay=0.001)
    drops: list[None] = []

    async def flood() -> None:
        poster = EventPoster(sink, capacity=5, dropped=lambda: drops.append(None))
        _post_issued(poster, 12)
        await poster.drain()
        poster.post(CERT, type="Normal", reason="Issued", message="after the flood")
        await poster.drain()

    asyncio.run(flood())
    assert len(drops) == 7
    messages = [body["message"] for _, body in sink.posted]
    assert messages == [f"serial {i}" for i in range(5)] + ["after the flood"]


def test_failing_and_hanging_posts_do_not_stop_the_ones_behind_them() -> None:
    sink = RecordingSink(fail_reasons=frozenset({"Broken"}))

    class HangsOnce(RecordingSink):
        hung = False

        async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
            if not self.hung:
                self.hung = True
                await asyncio.sleep(3600)
            await sink.create_event(namespace, body)

    async def post_all() -> None:
        poster = EventPoster(HangsOnce(), timeout=0.05)
        poster.post(CERT, type="Normal", reason="Hangs", message="never answered")
        poster.post(CERT, type="Warning", reason="Broken", message="refused")
        poster.post(CERT, type="Normal", reason="Issued", message="fine")
        await asyncio.wait_for(poster.drain(), 5)

    asyncio.run(post_all())
    assert [body["reason"] for _, body in sink.posted] == ["Issued"]


def test_cluster_scoped_objects_get_their_events_in_the_home_namespace() -> None:
    sink = RecordingSink()
    cluster_issuer = {
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "corp", "uid": "u-2"},
    }

    async def post() -> None:
        poster = EventPoster(sink, home_namespace="signet-system")
        poster.post(cluster_issuer, type="Normal", reason="Ready", message="x" * 5000)
        await poster.drain()

    asyncio.run(post())
    namespace, body = sink.posted[0]
    assert namespace == "signet-system"
    assert body["involvedObject"]["namespace"] is None
    assert len(body["message"]) == 1024


def test_close_cuts_a_stuck_drain_short_and_discards_the_rest() -> None:
    """A shutdown during a burst ends inside the pod's grace period (Runtime.stop)."""
    sink = RecordingSink(delay=3600)

    async def stop_while_stuck() -> bool:
        poster = EventPoster(sink)
        _post_issued(poster, 3)
        await asyncio.wait_for(poster.close(within=0.1), 1)
        await asyncio.sleep(0)  # let the cancellation land
        await asyncio.wait_for(poster.drain(), 1)  # nothing left running
        return sink.in_flight == 0

    assert asyncio.run(stop_while_stuck())
    assert sink.posted == []


FAILED: dict[str, str] = {"type": "Warning", "reason": "IssuanceFailed", "message": "KMS down"}


def _at(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_failure_repeated_on_every_retry_is_one_event_whose_count_grows() -> None:
    sink, clock = RecordingSink(), Clock()
    start = clock.now

    async def retry() -> None:
        poster = EventPoster(sink, clock=clock)
        for _ in range(50):
            poster.post(CERT, **FAILED)
            await poster.drain()
            clock.now += 5

    asyncio.run(retry())
    assert len(sink.posted) == 1
    assert [patch["count"] for _, _, patch in sink.patches] == list(range(2, 51))
    [event] = sink.events()
    assert (event["type"], event["reason"], event["message"]) == tuple(FAILED.values())
    assert event["count"] == 50
    assert event["firstTimestamp"] == _at(start)
    assert event["lastTimestamp"] == _at(start + 49 * 5)


def test_repeats_still_queued_are_folded_before_they_are_sent() -> None:
    """A burst of one failure: the copy being sent is created, the 49 that arrive meanwhile
    wait as one queued entry (taking one slot, dropping nothing) and become one patch."""
    sink = RecordingSink(delay=0.01)
    drops: list[None] = []

    async def burst() -> None:
        poster = EventPoster(sink, capacity=2, dropped=lambda: drops.append(None))
        poster.post(CERT, **FAILED)
        await sink.requested.wait()  # the first copy is on its way
        for _ in range(49):
            poster.post(CERT, **FAILED)
        await poster.drain()

    asyncio.run(burst())
    assert drops == []
    assert [body["count"] for _, body in sink.posted] == [1]
    assert [patch["count"] for _, _, patch in sink.patches] == [50]
    assert [event["count"] for event in sink.events()] == [50]


def test_events_differing_in_anything_but_time_are_separate() -> None:
    sink = RecordingSink()
    other = {**CERT, "metadata": {"name": "api", "namespace": "team-a", "uid": "u-9"}}
    variants: list[tuple[dict[str, Any], dict[str, str]]] = [
        (CERT, FAILED),
        (CERT, {**FAILED, "message": "KMS key disabled"}),
        (CERT, {**FAILED, "reason": "IssuerNotReady"}),
        (CERT, {**FAILED, "type": "Normal"}),
        (other, FAILED),
    ]

    async def post_twice() -> None:
        poster = EventPoster(sink)
        for _ in range(2):
            for obj, event in variants:
                poster.post(obj, **event)
            await poster.drain()

    asyncio.run(post_twice())
    assert len(sink.posted) == len(variants)
    assert len(sink.patches) == len(variants)
    assert sorted(
        (e["involvedObject"]["name"], e["type"], e["reason"], e["message"], e["count"])
        for e in sink.events()
    ) == sorted(
        (obj["metadata"]["name"], event["type"], event["reason"], event["message"], 2)
        for obj, event in variants
    )


def test_a_repeat_of_an_event_that_expired_creates_it_again() -> None:
    sink = RecordingSink()

    async def post() -> None:
        poster = EventPoster(sink)
        poster.post(CERT, **FAILED)
        await poster.drain()
        sink.stored.clear()  # the apiserver's event TTL ran out
        poster.post(CERT, **FAILED)
        await poster.drain()
        poster.post(CERT, **FAILED)
        await poster.drain()

    asyncio.run(post())
    assert len(sink.posted) == 2  # the first, and the one after the 404
    assert len(sink.patches) == 2  # the one answered 404, and one to the new Event
    [event] = sink.events()
    assert event["count"] == 2
    assert event["metadata"]["name"] == sink.posted[1][1]["metadata"]["name"]


def test_a_lost_patch_is_made_up_by_the_next_one() -> None:
    sink = RecordingSink()

    async def post() -> None:
        poster = EventPoster(sink)
        poster.post(CERT, **FAILED)
        await poster.drain()
        sink.fail_reasons = frozenset({FAILED["reason"]})
        poster.post(CERT, **FAILED)
        await poster.drain()
        sink.fail_reasons = frozenset()
        poster.post(CERT, **FAILED)
        await poster.drain()

    asyncio.run(post())
    assert len(sink.posted) == 1
    assert [event["count"] for event in sink.events()] == [3]


def test_a_repeat_after_the_window_starts_a_new_event() -> None:
    sink, clock = RecordingSink(), Clock()

    async def post() -> None:
        poster = EventPoster(sink, clock=clock, window=600)
        for step in (0, 599, 601, 1):
            clock.now += step
            poster.post(CERT, **FAILED)
            await poster.drain()

    asyncio.run(post())
    assert len(sink.posted) == 2
    assert sorted(event["count"] for event in sink.events()) == [2, 2]


def test_events_remembered_for_folding_are_bounded_least_recent_first() -> None:
    sink = RecordingSink()

    async def post() -> None:
        poster = EventPoster(sink, remembered=3)
        for message in ("m0", "m1", "m2", "m3", "m4"):
            poster.post(CERT, **{**FAILED, "message": message})
            await poster.drain()
        for message in ("m4", "m2", "m0"):  # m0 and m1 were forgotten
            poster.post(CERT, **{**FAILED, "message": message})
            await poster.drain()

    asyncio.run(post())
    created = [body["message"] for _, body in sink.posted]
    patched = [sink.stored[namespace, name]["message"] for namespace, name, _ in sink.patches]
    assert created == ["m0", "m1", "m2", "m3", "m4", "m0"]
    assert patched == ["m4", "m2"]


def test_a_create_retried_after_it_landed_counts_as_created(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client retried a POST whose answer was lost: the second answer is 409."""

    class AnswerLost(RecordingSink):
        async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
            await super().create_event(namespace, body)
            if len(self.posted) == 1:
                raise ApiError(409, "Conflict", "already exists", attempts=2)

    sink = AnswerLost()

    async def post() -> None:
        poster = EventPoster(sink)
        for _ in range(2):
            poster.post(CERT, **FAILED)
            await poster.drain()

    with caplog.at_level(logging.WARNING, logger="signet.observe.events"):
        asyncio.run(post())
    assert caplog.records == []
    assert len(sink.posted) == 1
    assert [event["count"] for event in sink.events()] == [2]

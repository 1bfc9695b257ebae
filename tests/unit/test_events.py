"""The Event poster: one request at a time, bounded, and never in the way of a reconcile.

The sink here records what it is given; the real sink (KubeApi against the apiserver) is
exercised by every operator test that waits for an Event.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
        self.in_flight = 0
        self.most_in_flight = 0

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if body["reason"] in self.fail_reasons:
                raise ConnectionResetError("apiserver went away")
            self.posted.append((namespace, body))
        finally:
            self.in_flight -= 1


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

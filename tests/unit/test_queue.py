"""The one scheduler: due order, de-duplication, one worker per key, bounded concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from signet.schedule.queue import WorkQueue


def _processed(schedule: Callable[[WorkQueue[str]], None], run_for: float) -> list[str]:
    """The keys a one-worker queue processes, in order, within ``run_for`` seconds of
    starting with what ``schedule`` added: the order is the queue's, not the workers'."""

    async def main() -> list[str]:
        seen: list[str] = []

        async def process(key: str) -> None:
            seen.append(key)

        queue: WorkQueue[str] = WorkQueue(process, workers=1)
        schedule(queue)
        queue.start()
        await asyncio.sleep(run_for)
        await queue.stop()
        return seen

    return asyncio.run(main())


def test_due_order_dedup_and_earliest_wins() -> None:
    def schedule(queue: WorkQueue[str]) -> None:
        queue.add("late", 0.15)
        queue.add("soon", 0.05)
        queue.add("soon", 0.5)  # later request does not delay a scheduled key
        queue.add("now")
        queue.add("now")
        queue.add("moved", 1.0)
        queue.add("moved", 0.1)  # earlier request wins

    assert _processed(schedule, 0.4) == ["now", "soon", "moved", "late"]


def test_key_added_while_processing_runs_once_more_never_concurrently() -> None:
    async def main() -> tuple[int, int]:
        runs = 0
        active = 0
        overlap = 0

        async def process(key: str) -> None:
            nonlocal runs, active, overlap
            runs += 1
            active += 1
            overlap = max(overlap, active)
            if runs == 1:
                queue.add(key)
                queue.add(key)
            await asyncio.sleep(0.05)
            active -= 1

        queue: WorkQueue[str] = WorkQueue(process, workers=4)
        queue.add("k")
        queue.start()
        await asyncio.sleep(0.3)
        await queue.stop()
        return runs, overlap

    assert asyncio.run(main()) == (2, 1)


def test_concurrency_is_bounded_and_errors_do_not_kill_workers() -> None:
    async def main() -> tuple[int, int, int]:
        active = peak = done = 0
        finished = asyncio.Event()

        async def process(key: int) -> None:
            nonlocal active, peak, done
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            if key % 10 == 0:
                raise RuntimeError("boom")
            done += 1
            if done == 90:
                finished.set()

        queue: WorkQueue[int] = WorkQueue(process, workers=3)
        for key in range(100):
            queue.add(key)
        queue.start()
        await asyncio.wait_for(finished.wait(), 5)
        depth = queue.due
        await queue.stop()
        return peak, done, depth

    peak, done, depth = asyncio.run(main())
    assert peak == 3
    assert done == 90
    assert depth == 0


def test_forget_drops_a_scheduled_key() -> None:
    def schedule(queue: WorkQueue[str]) -> None:
        queue.add("gone", 0.05)
        queue.add("kept", 0.05)
        queue.forget("gone")

    assert _processed(schedule, 0.2) == ["kept"]

"""The kopf wiring: only event handlers, and therefore nothing kopf needs to remember."""

from __future__ import annotations

import asyncio

import kopf

from signet.controller import handlers


def test_only_event_and_activity_handlers_are_registered() -> None:
    """EventOnlyMemories is safe only while no handler kind that needs kopf's per-object
    memory (changes, daemons/timers, indexes, webhooks) is registered."""
    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert registry._indexing.get_all_handlers() == []
    assert registry._webhooks.get_all_handlers() == []
    watched = {handler.selector.any_name for handler in registry._watching.get_all_handlers()}
    assert watched == {"certificates", "issuers", "clusterissuers", "secrets", "namespaces"}


def test_event_only_memories_keep_nothing() -> None:
    memories = handlers.EventOnlyMemories()
    body = {"metadata": {"uid": "0b9e1c4e-0000-4000-8000-000000000001"}}
    memobase = kopf.Memo(config="shared")

    async def recall_twice() -> tuple[object, object]:
        first = await memories.recall(body, memobase=memobase, noticed_by_listing=True)
        second = await memories.recall(body, memobase=memobase)
        return first, second

    first, second = asyncio.run(recall_twice())
    assert first is not second
    assert first.memo["config"] == "shared"  # type: ignore[attr-defined]
    assert list(memories.iter_all_memories()) == []


def test_no_essence_is_built_or_read_back_for_change_detection() -> None:
    stored = '{"spec": {"old": true}}'
    body = kopf.Body(
        {
            "metadata": {
                "name": "web",
                "annotations": {"kopf.zalando.org/last-handled-configuration": stored},
            },
            "data": {"tls.key": "S0VZ"},
        }
    )
    storage = handlers.NoEssence()
    assert kopf.AnnotationsDiffBaseStorage().fetch(body=body) == {"spec": {"old": True}}
    assert storage.fetch(body=body) is None
    assert storage.build(body=body) is None

"""The kopf wiring: only event handlers, and the private kopf API Signet relies on is still
where and what it was (a kopf upgrade that moves it fails here, not silently in production)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect

import kopf

from signet.controller import handlers, kopf_adapter


def test_kopf_is_the_release_the_private_names_were_checked_against() -> None:
    installed = importlib.metadata.version("kopf")
    major, minor = (int(part) for part in installed.split(".")[:2])
    assert (major, minor) == kopf_adapter.TESTED_KOPF, (
        f"kopf {installed}: re-check signet.controller.kopf_adapter, then update TESTED_KOPF"
    )
    assert "memories" in inspect.signature(kopf.run).parameters
    recall = inspect.signature(kopf_adapter.ResourceMemories.recall).parameters
    assert {"raw_body", "memobase", "noticed_by_listing", "ephemeral"} <= set(recall)


def test_only_event_handlers_are_registered() -> None:
    """EventOnlyMemories is safe only while no handler kind that needs kopf's per-object
    memory (changes, daemons/timers, indexes, webhooks) is registered."""
    assert handlers.LIST_PAGE  # importing handlers registers them
    registered = kopf_adapter.registered_handlers(kopf.get_default_registry())
    assert {kind: items for kind, items in registered.items() if kind != "watching"} == {
        "changing": [],
        "spawning": [],
        "indexing": [],
        "webhooks": [],
    }
    watched = {handler.selector.any_name for handler in registered["watching"]}
    # Certificates, Secrets and issuers are the runtime's informers' (controller.informer)
    assert watched == {
        "namespaces",
        "podcertificaterequests",
        "certificatesigningrequests",
        "certificaterequests",
    }


def test_event_only_memories_keep_nothing() -> None:
    memories = kopf_adapter.EventOnlyMemories()
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

"""The list pacer: kopf's next list page waits for the handlers, never for long."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from yarl import URL

from signet.controller.pacing import ListingExpired, ListPacer, list_scope

API = "https://kube.example:6443"
SECRETS = f"{API}/api/v1/namespaces/team-a/secrets?labelSelector=x%3Dy&limit=3"
CLUSTER_CERTS = f"{API}/apis/signet.dev/v1/certificates?limit=3"


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        (SECRETS, ("secrets", "team-a")),
        (SECRETS + "&continue=abc", ("secrets", "team-a")),
        (CLUSTER_CERTS, ("certificates", None)),
        (f"{API}/api/v1/namespaces?limit=3", ("namespaces", None)),
        (f"{API}/apis/signet.dev/v1/certificates?watch=true&limit=3", None),  # a watch
        (f"{API}/api/v1/namespaces/team-a/secrets/web-tls", None),  # a GET of one object
        (f"{API}/api/v1/namespaces/team-a/secrets", None),  # an unpaged list (ours)
    ],
)
def test_list_scope(url: str, scope: tuple[str, str | None] | None) -> None:
    assert list_scope(URL(url)) == scope


def _params(url: str, status: int = 200) -> Any:
    return SimpleNamespace(url=URL(url), method="GET", response=SimpleNamespace(status=status))


async def _request(pacer: ListPacer, url: str, status: int = 200) -> None:
    """What aiohttp does around one request: the start hook, then (answer) the end hook."""
    config = pacer.trace_config()
    for hook in config.on_request_start:
        await hook(None, SimpleNamespace(), _params(url))
    for hook in config.on_request_end:
        await hook(None, SimpleNamespace(), _params(url, status))


def test_next_page_waits_until_the_previous_page_is_handled() -> None:
    async def scenario() -> list[str]:
        pacer = ListPacer(page=3, patience=5.0)
        await _request(pacer, SECRETS)  # the first page goes at once
        second = asyncio.create_task(_request(pacer, SECRETS + "&continue=p2"))
        seen = []
        for _ in range(2):
            pacer.handled("secrets", "team-a")
            await asyncio.sleep(0.01)
        seen.append("waiting" if not second.done() else "went early")
        pacer.handled("secrets", "other-namespace")  # another scope does not count
        await asyncio.sleep(0.01)
        seen.append("waiting" if not second.done() else "went early")
        pacer.handled("secrets", "team-a")  # the third of the page
        await asyncio.wait_for(second, 1.0)
        seen.append(f"waits={pacer.waits}")
        return seen

    assert asyncio.run(scenario()) == ["waiting", "waiting", "waits=1"]


def test_a_cluster_wide_listing_counts_every_namespace() -> None:
    async def scenario() -> float:
        pacer = ListPacer(page=2, patience=5.0)
        await _request(pacer, CLUSTER_CERTS)
        pacer.handled("certificates", "a")
        pacer.handled("certificates", "b")
        started = time.monotonic()
        await _request(pacer, CLUSTER_CERTS + "&continue=p2")  # already handled: no wait
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.05


def test_a_short_page_costs_at_most_the_patience() -> None:
    async def scenario() -> float:
        pacer = ListPacer(page=200, patience=0.2)
        await _request(pacer, SECRETS)
        pacer.handled("secrets", "team-a")  # the page had one object, not 200
        started = time.monotonic()
        await _request(pacer, SECRETS + "&continue=p2")
        return time.monotonic() - started

    assert 0.15 < asyncio.run(scenario()) < 1.0


def test_a_listing_past_its_budget_is_no_longer_paced() -> None:
    """A continue token dies with the next compaction: a listing must not be held back
    page after page for longer than that."""

    async def scenario() -> tuple[float, int, int]:
        pacer = ListPacer(page=200, patience=5.0, budget=0.1)
        await _request(pacer, SECRETS)
        await asyncio.sleep(0.15)  # the listing is older than its budget
        started = time.monotonic()
        await _request(pacer, SECRETS + "&continue=p2")  # nothing handled, yet no wait
        return time.monotonic() - started, pacer.waits, pacer.unpaced

    took, waits, unpaced = asyncio.run(scenario())
    assert took < 0.1
    assert (waits, unpaced) == (0, 1)


def test_a_new_listing_is_paced_again() -> None:
    async def scenario() -> int:
        pacer = ListPacer(page=1, patience=0.05, budget=0.1)
        await _request(pacer, SECRETS)
        await asyncio.sleep(0.15)
        await _request(pacer, SECRETS)  # listed again from the start: a fresh budget
        await _request(pacer, SECRETS + "&continue=p2")
        return pacer.waits

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize(
    ("url", "status", "expired"),
    [
        (SECRETS + "&continue=p2", 410, True),  # the listing's snapshot was compacted away
        (SECRETS, 410, False),  # a first page: kopf's own error, nothing to list again
        (SECRETS + "&continue=p2", 500, False),  # kopf retries these itself
        (f"{API}/api/v1/namespaces/team-a/secrets?watch=true&continue=x&limit=3", 410, False),
    ],
    ids=["continued-410", "first-page-410", "continued-500", "watch-410"],
)
def test_an_expired_continue_token_ends_the_stream_as_a_payload_error(
    url: str, status: int, expired: bool
) -> None:
    """kopf stops the whole operator on an API error from a listing, but ends the stream
    quietly, and lists again, on a payload error."""
    pacer = ListPacer(page=3)
    if not expired:
        asyncio.run(_request(pacer, url, status))
        assert pacer.expired == 0
        return
    with pytest.raises(ListingExpired, match="secrets in team-a outlived its continue token"):
        asyncio.run(_request(pacer, url, status))
    assert isinstance(ListingExpired(""), aiohttp.ClientPayloadError)
    assert pacer.expired == 1

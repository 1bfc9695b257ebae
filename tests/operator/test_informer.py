"""The informer (list in pages, then watch) against the real apiserver, through the fault
proxy where the apiserver must misbehave: a listing whose snapshot expires, a watch cut
off, a watch refused with 410 Gone. What is checked is what reached the sink, in order,
and what requests the apiserver saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kopf
import kubernetes
import pytest

from signet.controller.informer import Collection, Informer
from signet.controller.kubeapi import KubeApi
from tests.faultproxy import FaultProxy
from tests.kube import Kube

pytestmark = pytest.mark.cluster
LABEL = "signet.test/informer"
WAIT_S = 60


class Seen(list[tuple[str | None, str]]):
    """What reached the sink, in order; awaitable by count."""

    def __init__(self) -> None:
        super().__init__()
        self._grown = asyncio.Event()

    def take(self, kind: str | None, body: dict[str, Any]) -> None:
        assert body["kind"] == "ConfigMap" and body["apiVersion"] == "v1"
        self.append((kind, body["metadata"]["name"]))
        self._grown.set()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self) < count:
                self._grown.clear()
                await self._grown.wait()


def _create(kube: Kube, namespace: str, name: str, labelled: bool = True) -> None:
    labels = {LABEL: "yes"} if labelled else {}
    body = kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels), data={"v": "1"}
    )
    kube.core.create_namespaced_config_map(namespace, body)


@contextlib.asynccontextmanager
async def _informing(
    info: kopf.ConnectionInfo, namespace: str, seen: Seen, page: int = 2
) -> AsyncIterator[Informer]:
    api = KubeApi(lambda: info)
    collection = Collection("", "v1", "configmaps", namespace, label_selector=f"{LABEL}=yes")
    informer = Informer(api, collection, seen.take, page=page, kind="ConfigMap")
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.listed.wait(), WAIT_S)
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


def test_lists_in_pages_then_hands_over_every_change_in_order(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    for i in range(5):
        _create(kube, namespace, f"c-{i}")
    _create(kube, namespace, "unlabelled", labelled=False)
    seen = Seen()

    async def main() -> None:
        async with _informing(proxied, namespace, seen):
            assert seen == [(None, f"c-{i}") for i in range(5)]
            await asyncio.to_thread(_create, kube, namespace, "c-new")
            patch = {"data": {"v": "2"}}
            await asyncio.to_thread(kube.core.patch_namespaced_config_map, "c-0", namespace, patch)
            await asyncio.to_thread(kube.core.delete_namespaced_config_map, "c-1", namespace)
            await seen.reach(8)

    asyncio.run(main())
    assert seen[5:] == [("ADDED", "c-new"), ("MODIFIED", "c-0"), ("DELETED", "c-1")]
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    assert apiserver_proxy.count("GET", path, watch=False) == 3  # pages of 2, 2 and 1


def test_a_listing_whose_snapshot_expired_starts_over(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    for i in range(5):
        _create(kube, namespace, f"c-{i}")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    expired = apiserver_proxy.fail(
        "GET", path, status=410, times=1, watch=False, where=lambda r: "continue=" in r.query
    )
    seen = Seen()

    async def main() -> int:
        async with _informing(proxied, namespace, seen) as informer:
            return informer.listings

    assert asyncio.run(main()) == 1
    assert expired.fired == 1
    # the first page twice: once before the expired token, once in the listing over
    assert seen == [(None, "c-0"), (None, "c-1")] + [(None, f"c-{i}") for i in range(5)]


def test_a_cut_watch_goes_on_from_the_last_version_without_listing_again(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    _create(kube, namespace, "c-0")
    seen = Seen()
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    async def main() -> int:
        async with _informing(proxied, namespace, seen) as informer:
            await asyncio.to_thread(_create, kube, namespace, "c-1")
            await seen.reach(2)  # from the watch: it is open
            assert await asyncio.to_thread(apiserver_proxy.cut_streams) == 1
            await asyncio.to_thread(_create, kube, namespace, "c-2")  # while no watch is open
            await seen.reach(3)
            return informer.listings

    assert asyncio.run(main()) == 1
    assert seen == [(None, "c-0"), ("ADDED", "c-1"), ("ADDED", "c-2")]
    assert apiserver_proxy.count("GET", path, watch=False) == 1
    watches = apiserver_proxy.requests("GET", path, watch=True)
    assert len(watches) == 2
    assert "resourceVersion=" in watches[1].query


def test_a_watch_refused_with_410_lists_again(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    _create(kube, namespace, "c-0")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    gone = apiserver_proxy.fail("GET", path, status=410, times=1, watch=True)
    seen = Seen()

    async def main() -> int:
        async with _informing(proxied, namespace, seen) as informer:
            await seen.reach(2)  # c-0 again, from the listing after the 410
            await asyncio.to_thread(_create, kube, namespace, "c-1")
            await seen.reach(3)
            return informer.listings

    assert asyncio.run(main()) == 2
    assert gone.fired == 1
    assert seen == [(None, "c-0"), (None, "c-0"), ("ADDED", "c-1")]


def test_an_object_whose_handling_fails_does_not_stop_the_others(
    kube: Kube,
    namespace: str,
    apiserver_proxy: FaultProxy,
    proxied: kopf.ConnectionInfo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(3):
        _create(kube, namespace, f"c-{i}")
    seen = Seen()
    take = seen.take

    def failing(kind: str | None, body: dict[str, Any]) -> None:
        take(kind, body)
        if body["metadata"]["name"] == "c-1":
            raise RuntimeError("a bug in the handling of c-1")

    seen.take = failing  # type: ignore[method-assign]

    async def main() -> None:
        async with _informing(proxied, namespace, seen):
            await asyncio.to_thread(_create, kube, namespace, "c-3")
            await seen.reach(4)

    asyncio.run(main())
    assert seen == [(None, "c-0"), (None, "c-1"), (None, "c-2"), ("ADDED", "c-3")]
    assert f"handling ConfigMap {namespace}/c-1 failed" in caplog.text

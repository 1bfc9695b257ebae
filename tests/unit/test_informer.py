"""The informer's reading of one watch event: what reaches the sink, and from which
version the watch goes on. The listing and watching themselves run against the real
apiserver in tests/operator/test_informer.py."""

from __future__ import annotations

from typing import Any

import pytest

from signet.controller.informer import Collection, Informer, VersionGone
from signet.controller.kubeapi import ApiError, KubeApi, jittered_backoff

Seen = list[tuple[str | None, str]]


def _informer(seen: Seen) -> Informer:
    def sink(kind: str | None, body: dict[str, Any]) -> None:
        seen.append((kind, body["metadata"]["name"]))

    never_called = KubeApi(lambda: None)
    collection = Collection("", "v1", "configmaps", "team-a")
    return Informer(never_called, collection, sink, page=50, kind="ConfigMap")


def _event(kind: str, name: str | None, version: str) -> dict[str, Any]:
    metadata = {"resourceVersion": version} | ({"name": name} if name else {})
    return {"type": kind, "object": {"metadata": metadata}}


@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
def test_a_change_is_handed_over_and_moves_the_version(kind: str) -> None:
    seen: Seen = []
    assert _informer(seen)._take(_event(kind, "web", "12"), "10") == "12"
    assert seen == [(kind, "web")]


def test_a_bookmark_moves_the_version_and_reaches_no_one() -> None:
    seen: Seen = []
    assert _informer(seen)._take(_event("BOOKMARK", None, "40"), "10") == "40"
    assert seen == []


def test_an_unknown_event_type_is_not_handed_over() -> None:
    seen: Seen = []
    assert _informer(seen)._take(_event("SOMETHING", "web", "11"), "10") == "11"
    assert seen == []


def test_an_expired_version_means_listing_again() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    with pytest.raises(VersionGone):
        _informer([])._take(gone, "10")


def test_any_other_error_event_is_an_api_error_naming_the_apiserver_message() -> None:
    error = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"},
    }
    with pytest.raises(ApiError) as raised:
        _informer([])._take(error, "10")
    assert (raised.value.status, raised.value.reason, raised.value.message) == (
        500,
        "InternalError",
        "boom",
    )


@pytest.mark.parametrize(
    ("collection", "path", "api_version"),
    [
        (Collection("", "v1", "secrets", "team-a"), "/api/v1/namespaces/team-a/secrets", "v1"),
        (
            Collection("signet.dev", "v1", "certificates", None),
            "/apis/signet.dev/v1/certificates",
            "signet.dev/v1",
        ),
    ],
)
def test_collection_paths(collection: Collection, path: str, api_version: str) -> None:
    assert (collection.path, collection.api_version) == (path, api_version)


@pytest.mark.parametrize(
    ("failures", "low", "high"), [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (9, 15.0, 30.0)]
)
def test_backoff_doubles_up_to_its_ceiling_and_lands_in_its_upper_half(
    failures: int, low: float, high: float
) -> None:
    waits = [jittered_backoff(failures, 1.0, 30.0) for _ in range(200)]
    assert all(low <= wait <= high for wait in waits)
    assert max(waits) - min(waits) > (high - low) / 4  # jittered, not one value

"""Bodies parked for their pass come back whole, minus what no pass reads, within a budget."""

from __future__ import annotations

from typing import Any

from signet.controller.watchcache import LAST_APPLIED, ParkedBodies, cert_id
from tests.unit.conftest import CERT

WEB = cert_id(*CERT)
OTHER = cert_id(CERT[0], "api")


def _body(resource_version: str = "7", **annotations: str) -> Any:
    return {
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "Certificate",
        "metadata": {
            "namespace": CERT[0],
            "name": CERT[1],
            "uid": "u-1",
            "generation": 2,
            "resourceVersion": resource_version,
            "annotations": {"team": "payments", **annotations},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "duration": "24h"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}], "revision": 3},
    }


def test_a_parked_body_comes_back_as_the_pass_needs_it() -> None:
    parked = ParkedBodies()
    assert parked.put(WEB, _body(**{LAST_APPLIED: '{"spec": "a copy"}'}))
    body = parked.take(WEB)
    expected = _body()
    del expected["metadata"]["managedFields"]
    assert body == expected
    assert parked.take(WEB) is None
    assert len(parked) == 0 and parked.size == 0


def test_the_newest_body_replaces_the_parked_one() -> None:
    parked = ParkedBodies()
    parked.put(WEB, _body("7"))
    parked.put(OTHER, _body("8"))
    parked.put(WEB, _body("9"))
    assert len(parked) == 2
    body = parked.take(WEB)
    assert body is not None and body["metadata"]["resourceVersion"] == "9"
    parked.discard(OTHER)
    assert parked.size == 0 and OTHER not in parked


def test_past_the_budget_a_body_is_not_parked_and_room_comes_back() -> None:
    one = ParkedBodies()
    one.put(WEB, _body())
    budget = one.size
    parked = ParkedBodies(budget=budget)
    assert parked.put(WEB, _body())
    assert not parked.put(OTHER, _body())
    assert OTHER not in parked and parked.size == budget
    parked.discard(WEB)
    assert parked.put(OTHER, _body())


def test_a_replacement_that_no_longer_fits_leaves_nothing_stale() -> None:
    """A pass must never read an older body than the watch delivered: if the newer one
    does not fit, the pass reads the Certificate instead."""
    parked = ParkedBodies()
    parked.put(WEB, _body())
    budget = parked.size
    small = ParkedBodies(budget=budget)
    small.put(WEB, _body())
    assert not small.put(WEB, _body(note="x" * 100))
    assert WEB not in small and small.size == 0

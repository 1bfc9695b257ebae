"""Signet's own Secret writes, seen on the watch before their response arrives, are held
until the response is recorded; then they are recognised and cost nothing."""

from __future__ import annotations

from typing import Any

from signet.secretformat import layout
from signet.secretformat.summary import summarize
from tests.unit.conftest import CERT, SECRET


def _secret(version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": SECRET[0],
            "name": SECRET[1],
            "resourceVersion": version,
            "labels": {layout.MANAGED_BY_LABEL: layout.MANAGED_BY},
        },
        "type": layout.TLS_TYPE,
        "data": {},
    }


def test_own_write_seen_first_on_the_watch_is_recognised(controller: Any) -> None:
    certificates, scheduled = controller
    with certificates.cache.own_write(SECRET):
        certificates.observe_secret(_secret("12"), deleted=False)  # the watch, first
        assert scheduled == [] and SECRET not in certificates.cache.secrets
        certificates.cache.secrets[SECRET] = summarize(_secret("12"))  # the response, recorded
    assert scheduled == []
    assert certificates.cache.secrets[SECRET].resource_version == "12"


def test_someone_elses_write_behind_ours_is_taken_after_it(controller: Any) -> None:
    certificates, scheduled = controller
    with certificates.cache.own_write(SECRET):
        certificates.observe_secret(_secret("12"), deleted=False)
        certificates.observe_secret(_secret("13"), deleted=False)  # kubectl edit, say
        certificates.cache.secrets[SECRET] = summarize(_secret("12"))
    assert scheduled == [CERT]
    assert certificates.cache.secrets[SECRET].resource_version == "13"


def test_a_deletion_during_a_failed_write_is_taken(controller: Any) -> None:
    certificates, scheduled = controller
    certificates.cache.secrets[SECRET] = summarize(_secret("11"))
    with certificates.cache.own_write(SECRET):
        certificates.observe_secret(_secret("11"), deleted=True)
        # the write failed (409/404): nothing recorded
    assert scheduled == [CERT]
    assert SECRET not in certificates.cache.secrets


def test_events_outside_a_write_are_taken_at_once(controller: Any) -> None:
    certificates, scheduled = controller
    certificates.observe_secret(_secret("12"), deleted=False)
    assert scheduled == [CERT]
    assert certificates.cache.secrets[SECRET].resource_version == "12"

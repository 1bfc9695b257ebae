"""A Certificate's spec is parsed, and its content hash worked out, once per generation."""

from __future__ import annotations

from typing import Any

import pytest

from signet.api.certificate import parse_certificate_spec
from signet.controller import watchcache
from tests.unit.conftest import CERT


def _body(uid: str = "u-1", generation: int | None = 1, dns: str = "web.example") -> Any:
    metadata = {"namespace": CERT[0], "name": CERT[1], "uid": uid, "generation": generation}
    if generation is None:
        del metadata["generation"]
    spec = {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "x509": {"dnsNames": [dns]}}
    return {"metadata": metadata, "spec": spec}


def test_a_certificate_queued_for_a_pass_keeps_its_parsed_spec(controller: Any) -> None:
    certificates, _ = controller
    body = _body(uid="u-new")
    assert certificates.observe_certificate(body, deleted=False) == CERT  # no Secret yet
    kept = certificates.cache._specs[("u-new", 1)]
    assert certificates.cache.spec(body) is kept
    assert certificates.cache.spec(_body(uid="u-new", generation=2)) is not kept


def test_a_spec_only_looked_at_is_parsed_again(controller: Any) -> None:
    """Certificates that need no pass (all of them after a restart) pin no memory."""
    certificates, _ = controller
    body = _body(uid="u-other")
    assert certificates.cache.spec(body) is not certificates.cache.spec(body)
    assert ("u-other", 1) not in certificates.cache._specs


def test_without_a_generation_nothing_is_kept(controller: Any) -> None:
    certificates, _ = controller
    body = _body(uid="u-nogen", generation=None)
    certificates.cache.keep_spec(body, certificates.cache.spec(body))
    assert all(uid != "u-nogen" for uid, _ in certificates.cache._specs)


def test_the_oldest_kept_specs_make_room(controller: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    certificates, _ = controller
    monkeypatch.setattr(watchcache, "PARSED_SPECS", 3)
    certificates.cache._specs.clear()
    for i in range(5):
        body = _body(uid=f"u-{i}")
        certificates.cache.keep_spec(body, certificates.cache.spec(body))
    assert list(certificates.cache._specs) == [("u-2", 1), ("u-3", 1), ("u-4", 1)]


def test_the_content_hash_is_stable_across_versions() -> None:
    """Stored on every Secret: a different value for the same spec after an upgrade would
    re-issue every Certificate. This is the value Signet has always computed for it."""
    spec = parse_certificate_spec(
        {
            "secretName": "web-tls",
            "issuerRef": {"name": "ca"},
            "duration": "24h",
            "x509": {"dnsNames": ["web.team-a.svc"]},
        }
    )
    assert spec.content_hash() == "fb3ff22cea10bf5dea18"
    assert spec.content_hash() is spec.content_hash()  # worked out once


def test_parsed_specs_are_let_go_once_a_burst_is_over(controller: Any) -> None:
    certificates, _ = controller
    certificates.observe_certificate(_body(uid="u-new"), deleted=False)
    assert certificates.cache._specs
    certificates.forget_parsed_specs()
    assert certificates.cache._specs == {}

"""A Certificate's spec is parsed, and its content hash worked out, once per generation."""

from __future__ import annotations

from typing import Any

import pytest

from signet.api.certificate import parse_certificate_spec
from signet.controller import certificates as certificates_module
from tests.unit.conftest import CERT


def _body(uid: str = "u-1", generation: int | None = 1, dns: str = "web.example") -> Any:
    metadata = {"namespace": CERT[0], "name": CERT[1], "uid": uid, "generation": generation}
    if generation is None:
        del metadata["generation"]
    spec = {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "x509": {"dnsNames": [dns]}}
    return {"metadata": metadata, "spec": spec}


def test_a_spec_is_parsed_once_per_generation(controller: Any) -> None:
    certificates, _ = controller
    first = certificates._spec(_body())
    assert certificates._spec(_body()) is first
    changed = certificates._spec(_body(generation=2, dns="api.example"))
    assert changed is not first
    assert changed.x509.dns_names == ("api.example",)


def test_without_a_generation_every_look_parses(controller: Any) -> None:
    certificates, _ = controller
    body = _body(generation=None)
    assert certificates._spec(body) is not certificates._spec(body)


def test_the_oldest_parsed_specs_make_room(
    controller: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificates, _ = controller
    monkeypatch.setattr(certificates_module, "PARSED_SPECS", 3)
    certificates._specs.clear()
    for i in range(5):
        certificates._spec(_body(uid=f"u-{i}"))
    assert list(certificates._specs) == [("u-2", 1), ("u-3", 1), ("u-4", 1)]


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
    first = certificates._spec(_body())
    certificates.forget_parsed_specs()
    assert certificates._specs == {}
    assert certificates._spec(_body()) is not first

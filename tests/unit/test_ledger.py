"""The ledger every request path keeps its signed-but-unwritten certificates in: each
outcome is one delivery record pointing at the signature, and nothing is said twice."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signet.controller.signing import Ledger
from signet.controller.unwritten import UnwrittenStore
from signet.observe.audit import AuditLog
from signet.observe.metrics import Metrics


@dataclass(frozen=True)
class Item:
    name: str
    signature: str
    serial: str = "01"

    def subject(self) -> dict[str, Any]:
        return {"thing": {"name": self.name}}


def _deliveries(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["kind"] == "signet.dev/delivery"]


def test_each_outcome_is_one_record_naming_the_signature_and_the_object(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ledger: Ledger[str, Item] = Ledger(AuditLog(path))
    a, b = Item("a", "sig-a"), Item("b", "sig-b")

    ledger.write_failed("a", a, RuntimeError("HTTP 503"), target="a-target")
    assert "a" in ledger and ledger.get("a") is a
    assert ledger.written("a", resourceVersion="7")
    assert "a" not in ledger
    assert not ledger.written("a")  # nothing kept any more: nothing said again

    ledger.keep("b", b)
    ledger.discard("b", "Superseded", "the spec changed")
    ledger.discard("b", "Superseded", "said once only")

    assert [(r["signature"], r["outcome"], r["thing"]["name"]) for r in _deliveries(path)] == [
        ("sig-a", "write-failed", "a"),
        ("sig-a", "written", "a"),
        ("sig-b", "discarded", "b"),
    ]
    failed, written, discarded = _deliveries(path)
    assert failed["error"] == "HTTP 503" and failed["target"] == "a-target"
    assert written["resourceVersion"] == "7" and written["serialNumber"] == "01"
    assert discarded["reason"] == "Superseded"


def test_an_item_written_without_being_kept_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ledger: Ledger[str, Item] = Ledger(AuditLog(path))
    assert ledger.written("x", Item("x", "sig-x"), resourceVersion="3")
    assert [r["outcome"] for r in _deliveries(path)] == ["written"]


def test_the_oldest_is_given_up_past_capacity_and_a_replaced_one_too(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ledger: Ledger[str, Item] = Ledger(AuditLog(path), UnwrittenStore(capacity=2))
    ledger.keep("a", Item("a", "sig-a1"))
    ledger.keep("b", Item("b", "sig-b"))
    ledger.keep("a", Item("a", "sig-a2"))  # replaces a's first signature
    ledger.keep("c", Item("c", "sig-c"))  # pushes out b, now the oldest
    assert len(ledger) == 2 and "b" not in ledger
    assert [(r["signature"], r["reason"]) for r in _deliveries(path)] == [
        ("sig-a1", "Evicted"),
        ("sig-b", "Evicted"),
    ]


def test_metrics_count_what_waits_and_what_was_given_up(tmp_path: Path) -> None:
    metrics = Metrics()
    first: Ledger[str, Item] = Ledger(AuditLog(tmp_path / "a.jsonl"), metrics=metrics)
    second: Ledger[str, Item] = Ledger(AuditLog(tmp_path / "b.jsonl"), metrics=metrics)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    first.keep("a", Item("a", "sig-a"))
    second.write_failed("b", Item("b", "sig-b"), RuntimeError("HTTP 500"))
    assert sample("signet_signatures_undelivered") == 2
    first.written("a")
    second.discard("b", "Superseded", "the spec changed")
    assert sample("signet_signatures_undelivered") == 0
    assert sample("signet_signatures_discarded_total", reason="Superseded") == 1
    assert sample("signet_signatures_discarded_total", reason="Evicted") is None

"""Status writes happen only when something a reader sees has changed."""

from __future__ import annotations

import datetime

from signet.controller import status as st

T0 = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def _ready(
    now: datetime.datetime, previous: dict[str, object] | None = None, status: str = "True"
) -> dict[str, object]:
    return st.condition("Ready", status, "Ready", "ok", generation=1, previous=previous, now=now)


def test_transition_time_moves_only_with_status() -> None:
    first = _ready(T0)
    assert _ready(T1, first)["lastTransitionTime"] == "2026-11-26T12:00:00Z"
    assert _ready(T1, first, status="False")["lastTransitionTime"] == "2026-11-26T12:05:00Z"


def test_no_patch_when_only_transition_time_differs() -> None:
    current = {"conditions": [_ready(T0)], "serialNumber": "01"}
    desired = {
        "conditions": [{**_ready(T0), "lastTransitionTime": "2030-01-01T00:00:00Z"}],
        "serialNumber": "01",
    }
    assert st.status_patch(current, desired) is None


def test_patch_removes_fields_that_are_gone() -> None:
    current = {"conditions": [_ready(T0)], "failedIssuanceAttempts": 3, "serialNumber": "01"}
    desired = {"conditions": [_ready(T0)], "serialNumber": "02"}
    assert st.status_patch(current, desired) == {
        "conditions": [_ready(T0)],
        "serialNumber": "02",
        "failedIssuanceAttempts": None,
    }

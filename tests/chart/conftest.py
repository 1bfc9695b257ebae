"""Fixtures of the chart tests (helm itself is found by tests.chart.helm; ``namespace`` and
``other_namespace`` come from the root conftest)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def release_name() -> str:
    return f"sig-{uuid.uuid4().hex[:8]}"

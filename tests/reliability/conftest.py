"""Fixtures of the reliability suite, and the closing table of what each fault did.

The operator fixtures come from the ``tests.operator_fixtures`` plugin (one ``signet run``
subprocess for the session); tests that kill or duplicate the operator restart it before
they end. Every test records ``fault -> behaviour -> time to recover`` through the
``record`` fixture; the rows are collected in a JSON file in the session's temporary
directory and printed as a table at the end of the run, whether or not ``-s`` was given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RESULTS_KEY = pytest.StashKey[Path]()
Recorder = Callable[..., None]


@pytest.fixture(scope="session")
def results_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "reliability-results.json"
    request.config.stash[RESULTS_KEY] = path
    return path


@pytest.fixture
def record(results_file: Path, request: pytest.FixtureRequest) -> Recorder:
    """``record(fault, behaviour, recovery_s, **numbers)`` appends one row to the table."""

    def add(fault: str, behaviour: str, recovery_s: float | None, **numbers: Any) -> None:
        rows: list[dict[str, Any]] = (
            json.loads(results_file.read_text()) if results_file.exists() else []
        )
        rows.append(
            {
                "test": request.node.nodeid.split("::", 1)[-1],
                "fault": fault,
                "behaviour": behaviour,
                "recovery_s": None if recovery_s is None else round(recovery_s, 1),
                **numbers,
            }
        )
        results_file.write_text(json.dumps(rows, indent=1))

    return add


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    path = config.stash.get(RESULTS_KEY, None)
    if path is None or not path.exists():
        return
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    write = terminalreporter.write_line
    terminalreporter.section("reliability results")
    write(f"(raw rows: {path})")
    write("| fault | behaviour | recovery (s) | numbers |")
    write("|---|---|---|---|")
    for row in rows:
        numbers = ", ".join(
            f"{k}={v}"
            for k, v in row.items()
            if k not in ("test", "fault", "behaviour", "recovery_s")
        )
        recovery = "-" if row["recovery_s"] is None else str(row["recovery_s"])
        write(f"| {row['fault']} | {row['behaviour']} | {recovery} | {numbers} |")

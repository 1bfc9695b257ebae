"""The noise verdict of a benchmark run (``bench.noise``), from made-up window records: a
run is "too noisy to judge" exactly when its windows differ beyond the documented limits,
and it says which figure and why."""

from __future__ import annotations

import os
from typing import Any

from bench import noise


def _window(load: float = 0.5, foreign: float = 0.1) -> dict[str, Any]:
    return {"load_1m": [load, load], "foreign_cores": foreign}


def test_steady_windows_are_comparable() -> None:
    windows = [_window(0.5, 0.1), _window(0.8, 0.3), _window(1.2, 0.4)]
    result = noise.assess(windows, [1.0, 1.2, 1.4], "floor windows (s)")
    assert result["noisy"] is False and result["reasons"] == []
    assert result["repeated_max_over_min"] == 1.4
    assert result["load_1m_range"] == [0.5, 1.2]
    assert result["foreign_cores_range"] == [0.1, 0.4]
    assert noise.verdict({"throughput": {"noise": result}})["verdict"] == "comparable"


def test_a_floor_that_moves_by_half_makes_the_run_noisy() -> None:
    result = noise.assess([_window()] * 3, [1.0, 1.6, 1.1], "floor windows (s)")
    assert result["noisy"] is True
    (reason,) = result["reasons"]
    assert "floor windows (s) 1 to 1.6" in reason and "1.60 > 1.5" in reason


def test_other_processes_taking_half_a_core_more_in_one_window_is_noisy() -> None:
    windows = [_window(foreign=0.05), _window(foreign=0.6), _window(foreign=0.1)]
    result = noise.assess(windows, [1.0, 1.0, 1.0], "rounds' p50 (ms)")
    assert result["noisy"] is True
    assert "0.05 to 0.60 cores" in result["reasons"][0]


def test_the_load_average_is_recorded_not_judged() -> None:
    """It climbs with the benchmark's own busy windows: others' CPU is what is judged."""
    windows = [_window(load=0.9, foreign=0.0), _window(load=1.6), _window(load=2.4)]
    result = noise.assess(windows, [1.0, 1.0, 1.0], "floor windows (s)")
    assert result["noisy"] is False and result["load_1m_range"] == [0.9, 2.4]


def test_fewer_than_three_windows_cannot_be_judged() -> None:
    result = noise.assess([_window()] * 2, [1.0, 1.0], "floor windows (s)")
    assert result["noisy"] is True and "at least 3" in result["reasons"][0]


def test_the_verdict_names_each_noisy_figure_in_one_plain_line() -> None:
    quiet = noise.assess([_window()] * 3, [1.0, 1.0, 1.0], "rounds' p50 (ms)")
    loud = noise.assess([_window()] * 3, [1.0, 2.0, 1.0], "floor windows (s)")
    result = noise.verdict({"latency": {"noise": quiet}, "throughput": {"noise": loud}, "x": 1})
    assert result["verdict"] == "too noisy to judge"
    assert result["figures"] == ["latency", "throughput"]
    line = noise.verdict_line(result)
    assert line.startswith("verdict: too noisy to judge: throughput: floor windows (s) 1 to 2")
    assert "latency" not in line


def test_a_busy_machine_is_noted_without_failing_the_verdict() -> None:
    busy = noise.BUSY_SHARE * (os.cpu_count() or 1) + 0.1
    windows = [_window(foreign=busy), _window(foreign=busy + 0.2), _window(foreign=busy + 0.1)]
    result = noise.assess(windows, [1.0, 1.1, 1.05], "floor windows (s)")
    assert result["noisy"] is False
    assert result["notes"] and "not comparable with a quiet run" in result["notes"][0]


def test_spread_reports_median_and_extremes_in_the_order_taken() -> None:
    result = noise.spread([3.0, 1.0, 2.0])
    assert result == {"values": [3.0, 1.0, 2.0], "median": 2.0, "min": 1.0, "max": 3.0,
                      "max_over_min": 3.0}  # fmt: skip

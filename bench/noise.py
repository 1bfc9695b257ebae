"""Was the machine steady enough to compare a run's windows? (issue 19)

The benchmarks run on shared two-core machines where other people's tests come and go.
One timed window says little there, so every timed figure is measured in several windows
(operator and floor alternating, or rounds) and each window records what the machine did
besides the benchmark. This module turns those records into a verdict: a run whose
windows saw very different conditions is "too noisy to judge", and says why.

Two signals, each with a threshold chosen for this machine's figures:

* **Spread of a repeated measure** (``SPREAD_LIMIT``, max/min > 1.5): the floor does the
  same fixed work in each of its windows, so its windows may differ only by what the
  machine did to them; the rounds of a latency or restart figure likewise. The
  throughput target is a ratio of 1.5 and the measured ratio is about 1.3: a floor that
  moves by half between windows moves the ratio by more than that margin.
* **Foreign CPU** (``FOREIGN_RANGE_LIMIT``, 0.5 cores between the calmest and the busiest
  window): CPU seconds the whole machine spent (``/proc/stat``, steal included) minus
  those of the benchmark's own processes, per second of the window. The windows keep both
  cores ~98% busy, so half a core taken from one window and not another stretches it by
  a third (2 / 1.5), again more than the margin to the target. This is the load the
  windows saw from other people's work, exact to the scheduler tick.

The **1-minute load average** (``/proc/loadavg``) is recorded at the start and end of
every window, and its range per figure reported, but not judged: it is smoothed over a
minute and counts the benchmark's own processes, so it climbs through the first minute of
busy windows on a quiet machine and decays through the rounds after a busy phase. A run
of back-to-back pod-certificate windows on an otherwise idle machine (others' CPU 0.00 to
0.03 cores) saw it go from 1.2 to 2.4: a threshold on it would call that run noisy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import CpuMeter, cpu_seconds

SPREAD_LIMIT = 1.5
"""max / min of the floor's windows (or of a figure's rounds) beyond which a run is noisy."""
FOREIGN_RANGE_LIMIT = 0.5
"""Cores of CPU outside the benchmark: largest minus smallest window, beyond which noisy."""
BUSY_SHARE = 0.25
"""A window where others used more than this share of the machine is noted (not judged):
its absolute seconds are not comparable with a quiet run's, though its ratio may be."""

_TICK = os.sysconf("SC_CLK_TCK")


def load_1m() -> float:
    """The 1-minute load average (``/proc/loadavg``)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from the ``cpu`` line of
    ``/proc/stat``: user, nice, system, irq and softirq (guest time is inside user), and
    the time the hypervisor gave to other guests."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields] + [0] * 10
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


class WindowMeter:
    """What one timed window cost and what the machine did meanwhile: its seconds, the
    CPU seconds of each of the benchmark's processes, the 1-minute load average at its
    start and end, and the CPU of everything else (``foreign``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._cpu = CpuMeter(pids)
        self._started = 0.0
        self._load = 0.0
        self._machine = (0.0, 0.0)

    def start(self) -> None:
        self._load = load_1m()
        self._machine = machine_cpu()
        self._cpu.start()
        self._started = time.perf_counter()

    def stop(self, started_inside: dict[str, int] | None = None) -> dict[str, Any]:
        """The window's record; ``started_inside`` are processes spawned during the window
        (an operator restarting), all of whose CPU falls in it."""
        seconds = time.perf_counter() - self._started
        spent = self._cpu.stop()
        for name, pid in (started_inside or {}).items():
            spent[name] = round(cpu_seconds(pid), 2)
        busy, steal = machine_cpu()
        ours = sum(spent.values())
        foreign = max(0.0, busy - self._machine[0] - ours) + (steal - self._machine[1])
        return {
            "seconds": round(seconds, 2),
            "load_1m": [self._load, load_1m()],
            "cpu_s": spent,
            "benchmark_cpu_s": round(ours, 2),
            "foreign_cpu_s": round(foreign, 2),
            "foreign_cores": round(foreign / max(seconds, 1e-3), 2),
            "steal_s": round(steal - self._machine[1], 2),
        }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and max/min of a repeated measure, in the order taken."""
    if not values:
        return {"values": [], "median": None, "min": None, "max": None, "max_over_min": None}
    low, high = min(values), max(values)
    return {
        "values": [round(v, 3) for v in values],
        "median": round(statistics.median(values), 3),
        "min": round(low, 3),
        "max": round(high, 3),
        "max_over_min": round(high / low, 2) if low > 0 else None,
    }


def _load(window: dict[str, Any]) -> float:
    start, end = window["load_1m"]
    return float(start + end) / 2


def assess(
    windows: Sequence[dict[str, Any]], repeated: Sequence[float], repeated_name: str
) -> dict[str, Any]:
    """The noise of one figure: ``windows`` are its window records (``WindowMeter``),
    ``repeated`` the measure that should not move between them (the floor's seconds, a
    round's p50, a restart's seconds to idle)."""
    loads = [_load(w) for w in windows]
    foreign = [float(w["foreign_cores"]) for w in windows]
    reasons: list[str] = []
    ratio = spread(repeated)["max_over_min"]
    if len(repeated) < 3:
        reasons.append(f"only {len(repeated)} {repeated_name}: at least 3 are needed")
    elif ratio is not None and ratio > SPREAD_LIMIT:
        reasons.append(
            f"{repeated_name} {min(repeated):.3g} to {max(repeated):.3g} "
            f"(max/min {ratio:.2f} > {SPREAD_LIMIT})"
        )
    foreign_range = max(foreign) - min(foreign) if foreign else 0.0
    if foreign_range > FOREIGN_RANGE_LIMIT:
        reasons.append(
            f"other processes used {min(foreign):.2f} to {max(foreign):.2f} cores between "
            f"windows (> {FOREIGN_RANGE_LIMIT:g} apart)"
        )
    cores = os.cpu_count() or 1
    notes = []
    if foreign and max(foreign) > BUSY_SHARE * cores:
        notes.append(
            f"others used up to {max(foreign):.2f} of {cores} cores: absolute times are not "
            "comparable with a quiet run"
        )
    return {
        "noisy": bool(reasons),
        "reasons": reasons,
        "notes": notes,
        "repeated": repeated_name,
        "repeated_max_over_min": ratio,
        "load_1m_range": [round(min(loads), 2), round(max(loads), 2)] if loads else None,
        "foreign_cores_range": [round(min(foreign), 2), round(max(foreign), 2)]
        if foreign
        else None,
    }


def verdict(figures: dict[str, Any]) -> dict[str, Any]:
    """The run's verdict from every figure's ``noise`` block: "comparable", or "too noisy
    to judge" with each figure's reasons."""
    reasons: list[str] = []
    notes: list[str] = []
    judged: list[str] = []
    for name, figure in figures.items():
        noise = figure.get("noise") if isinstance(figure, dict) else None
        if noise is None:
            continue
        judged.append(name)
        reasons += [f"{name}: {reason}" for reason in noise["reasons"]]
        notes += [f"{name}: {note}" for note in noise["notes"]]
    return {
        "verdict": "too noisy to judge" if reasons else "comparable",
        "reasons": reasons,
        "notes": notes,
        "figures": judged,
        "thresholds": {
            "spread_max_over_min": SPREAD_LIMIT,
            "foreign_cores_range": FOREIGN_RANGE_LIMIT,
        },
    }


def verdict_line(result: dict[str, Any]) -> str:
    """One plain line for the end of a run."""
    if result["verdict"] == "comparable":
        return f"verdict: comparable ({', '.join(result['figures']) or 'no timed figure'})"
    return "verdict: too noisy to judge: " + "; ".join(result["reasons"])

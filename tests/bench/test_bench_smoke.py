"""The benchmark harness at a tiny size, so it keeps working between real runs.

It starts its own control plane, KMS emulator and operator exactly as ``make bench`` does;
only the sizes differ. The numbers are not judged here (CI machines are noisy), only the
shape of the result file: every timed figure in alternating windows or rounds, each window
with its machine record, and the run's noise verdict.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kube import ROOT

pytestmark = pytest.mark.cluster

ROUNDS = 3


def _check_window(window: dict[str, Any], name: str, processes: set[str]) -> None:
    """A window's record: its seconds, the load average at its start and end, CPU seconds
    per process, other processes' CPU, and the apiserver requests it served."""
    assert window["name"] == name
    assert window["seconds"] > 0
    assert len(window["load_1m"]) == 2 and all(v >= 0 for v in window["load_1m"])
    assert processes <= set(window["cpu_s"]), window["cpu_s"]
    assert window["foreign_cpu_s"] >= 0 and window["foreign_cores"] >= 0
    assert window["benchmark_cpu_s"] >= 0
    assert isinstance(window["requests"], dict)


def _check_noise(noise: dict[str, Any]) -> None:
    assert isinstance(noise["noisy"], bool)
    assert noise["noisy"] == bool(noise["reasons"])
    low, high = noise["load_1m_range"]
    assert 0 <= low <= high
    low, high = noise["foreign_cores_range"]
    assert 0 <= low <= high


def _check_spread(spread: dict[str, Any], count: int) -> None:
    assert len(spread["values"]) == count
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert spread["max_over_min"] >= 1


def _check_alternation(figure: dict[str, Any], prefix: str) -> None:
    """Operator and floor windows alternate, each side's median is the headline, and the
    per-pair ratios give the spread."""
    assert figure["rounds"] == ROUNDS
    expected = [f"{prefix}{side}-{i}" for i in range(ROUNDS) for side in ("operator", "floor")]
    assert figure["order"] == expected
    for side in ("operator", "floor"):
        windows = figure[f"{side}_windows"]
        assert [w["name"] for w in windows] == [f"{prefix}{side}-{i}" for i in range(ROUNDS)]
        for w in windows:
            processes = {"kube-apiserver", "etcd", "kms_emulator", "harness", "operator"}
            _check_window(w["window"], w["name"], processes)
        _check_spread(figure[f"{side}_windows_s"], ROUNDS)
        assert figure[f"{side}_s"] == pytest.approx(
            figure[f"{side}_windows_s"]["median"], abs=0.006
        )
    _check_spread(figure["pair_ratios"], ROUNDS)
    medians = figure["operator_windows_s"]["median"] / figure["floor_windows_s"]["median"]
    assert figure["ratio"] == pytest.approx(medians, abs=0.006)
    assert figure["between_windows"]
    _check_noise(figure["noise"])


def _check_rounds(figure: dict[str, Any], runs: int, prefix: str) -> None:
    """Latency in rounds: percentiles over every run, and each round's with their spread."""
    assert figure["runs"] == runs and figure["rounds"] == ROUNDS
    assert len(figure["samples_ms"]) == runs * ROUNDS
    assert 0 < figure["p50_ms"] <= figure["p99_ms"]
    assert len(figure["per_round"]) == ROUNDS
    for r, one in enumerate(figure["per_round"]):
        assert 0 < one["p50_ms"] <= one["p99_ms"] <= one["max_ms"]
        _check_window(one["window"], f"{prefix}-{r}", {"operator", "kube-apiserver"})
    _check_spread(figure["rounds_p50_ms"], ROUNDS)
    _check_spread(figure["rounds_p99_ms"], ROUNDS)
    _check_noise(figure["noise"])


def test_bench_runs_and_writes_every_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only=throughput",
            "--only=latency",
            "--only=restart",
            "--only=podcerts",
            "--throughput=10",
            "--latency-runs=3",
            "--memory=20",
            "--unrelated=4",
            "--pcr-latency-runs=3",
            "--pcr-throughput=5",
            "--pcr-memory=20",
            f"--output={tmp_path}",
            f"--restart-source={ROOT / 'operator'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    figures = data["figures"]

    machine = data["machine"]
    for field in ("cores", "cpu_model", "python", "kubernetes", "kopf"):
        assert machine[field], field
    assert machine["kubernetes"].startswith("v1.")
    assert data["sizes"]["rounds"] == ROUNDS

    throughput = figures["throughput"]
    assert throughput["certificates"] == 10
    _check_alternation(throughput, "")
    assert throughput["floor_precreated_s"] > 0

    _check_rounds(figures["latency"], 3, "latency")

    restart = figures["restart"]
    assert restart["rounds"] == ROUNDS and len(restart["per_restart"]) == ROUNDS
    assert restart["kms_sign_calls"] == 0 and restart["secrets_changed"] == 0
    assert restart["kms_get_public_key_calls"] == [1] * ROUNDS
    for r, one in enumerate(restart["per_restart"]):
        _check_window(one["window"], f"restart-{r}", {"operator", "kube-apiserver"})
        assert one["memory"]["rss_mib"] > 0
    _check_spread(restart["idle_after_spawn_spread_s"], ROUNDS)
    assert restart["idle_after_spawn_s"] == restart["idle_after_spawn_spread_s"]["median"]
    _check_noise(restart["noise"])
    _check_spread(figures["memory"]["after_restart_rss_mib"], ROUNDS)
    for process in ("operator", "kube-apiserver"):
        _check_spread(restart["cpu_s"][process], ROUNDS)
    assert len(restart["cpu_s"]["etcd"]["values"]) == ROUNDS
    # --restart-source: its restarts took turns with the harness's own, round by round
    (other,) = restart["other_sources"].values()
    assert other["kms_sign_calls"] == 0 and other["secrets_changed"] == 0
    for r, one in enumerate(other["per_restart"]):
        _check_window(one["window"], f"restart-{r}-operator", {"operator", "kube-apiserver"})
    assert restart["cpu_s"]["operator"]["min"] > 0

    kms = figures["kms_efficiency"]
    assert kms["sign_calls_per_certificate"] == {"throughput": 1.0, "latency": 1.0}
    keys = [f"throughput-{i}" for i in range(ROUNDS)] + ["latency"]
    assert kms["get_public_key_calls_per_issuer_per_process"] == dict.fromkeys(keys, 1)

    _check_rounds(figures["pcr_latency"], 3, "pcr-latency")
    pcr = figures["pcr_throughput"]
    assert pcr["requests"] == 5
    _check_alternation(pcr, "pcr-")
    memory = figures["pcr_memory"]
    assert memory["requests"] == 20
    for reading in ("fresh_baseline", "warmed_baseline", "after_issuance", "after_restart"):
        assert memory[reading]["rss_mib"] > 0, reading
    assert isinstance(memory["kib_per_request_after_restart"], float)
    assert isinstance(memory["kib_per_request_after_issuance"], float)
    assert memory["restart"]["kms_sign_calls"] == 0
    assert memory["restart"]["status_writes"] == 0
    pcr_kms = figures["pcr_kms"]
    assert set(pcr_kms["sign_calls_per_request"].values()) == {1.0}
    assert set(pcr_kms["get_public_key_calls_per_issuer_per_process"].values()) == {1}

    noise = data["noise"]
    assert noise["verdict"] in ("comparable", "too noisy to judge")
    assert (noise["verdict"] == "comparable") == (not noise["reasons"])
    assert set(noise["figures"]) == {
        "throughput",
        "latency",
        "restart",
        "pcr_latency",
        "pcr_throughput",
    }
    assert re.search(rf"^verdict: {noise['verdict']}", result.stdout, re.MULTILINE)

    measures = {(row["figure"], row["measure"]) for row in data["targets"]}
    assert ("throughput", "ratio of medians operator/floor") in measures
    assert ("latency", "p99 ms (9 runs)") in measures
    assert ("pcr", "latency p99 ms (9 requests)") in measures
    assert ("pcr", "ratio of medians operator/floor") in measures
    assert ("pcr", "RSS KiB/request, 20 Issued, after restart") in measures
    assert "ratio of medians operator/floor" in result.stdout

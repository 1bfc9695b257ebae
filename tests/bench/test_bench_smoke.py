"""The benchmark harness at a tiny size, so it keeps working between real runs.

It starts its own control plane, KMS emulator and operator exactly as ``make bench`` does;
only the sizes differ. The numbers are not judged here (CI machines are noisy), only the
shape of the result file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kube import ROOT

pytestmark = pytest.mark.cluster


def test_bench_runs_and_writes_every_field(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only=throughput",
            "--only=latency",
            "--throughput=10",
            "--latency-runs=5",
            f"--output={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())

    machine = data["machine"]
    for field in ("cores", "cpu_model", "python", "kubernetes", "kopf"):
        assert machine[field], field
    assert machine["kubernetes"].startswith("v1.")

    throughput = data["figures"]["throughput"]
    assert throughput["certificates"] == 10
    for field in ("operator_s", "floor_s", "ratio"):
        assert throughput[field] > 0, field

    latency = data["figures"]["latency"]
    assert latency["runs"] == 5 and len(latency["samples_ms"]) == 5
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]

    kms = data["figures"]["kms_efficiency"]
    assert kms["sign_calls_per_certificate"] == {"throughput": 1.0, "latency": 1.0}
    assert kms["get_public_key_calls_per_issuer_per_process"] == {"throughput": 1, "latency": 1}

    measures = {(row["figure"], row["measure"]) for row in data["targets"]}
    assert ("throughput", "ratio operator/floor") in measures
    assert ("latency", "p99 ms") in measures
    assert "ratio operator/floor" in result.stdout

"""The side-by-side with the real cert-manager controller at a tiny size, so the harness
keeps working between real runs: alternating windows, each with its writes, CPU and RSS,
and the rows of the run's table. The numbers are not judged (CI machines are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from signet_dev import certmanager
from tests.kube import ROOT

pytestmark = pytest.mark.cluster

ROUNDS = 3


def test_certmanager_figure_runs_and_writes_every_field(tmp_path: Path) -> None:
    if not certmanager.available():
        pytest.fail(f"{certmanager.binary()} or {certmanager.CRDS} missing: run `make tools`")
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "--only=certmanager", "--certmanager=5",
            "--certmanager-large=10", f"--output={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    figure = data["figures"]["certmanager"]

    assert figure["certificates"] == 5 and figure["rounds"] == ROUNDS
    expected = [f"{side}-{i}" for i in range(ROUNDS) for side in ("cm", "signet")]
    assert figure["order"] == expected
    for side, process in (("cert_manager", "cert_manager"), ("signet", "operator")):
        windows = figure[f"{side}_windows"]
        assert len(windows) == ROUNDS
        for w in windows:
            assert w["seconds"] > 0 and w["rss_mib"] > 0 and w["hwm_mib"] >= w["rss_mib"]
            assert w["writes"] > 0 and w["controller_cpu_s"] >= 0
            # both controllers are accounted in every window, the idle one too
            assert {"cert_manager", "operator", "kube-apiserver"} <= set(w["window"]["cpu_s"])
            assert w["window"]["cpu_s"][process] >= 0
        headline = figure[side]
        assert headline["seconds"] == pytest.approx(headline["windows_s"]["median"], abs=0.006)
        assert headline["writes_per_certificate"] > 0
    # cert-manager's Certificates go through CertificateRequests; Signet's do not
    assert "POST certificaterequests" in figure["cert_manager_windows"][0]["write_requests"]
    assert "POST certificaterequests" not in figure["signet_windows"][0]["write_requests"]
    assert figure["speedup"] > 0 and figure["writes_ratio"] > 0
    assert isinstance(figure["noise"]["noisy"], bool)
    large = figure["large"]
    assert large["certificates"] == 10 and [w["name"] for w in large["windows"]] == [
        "cm-large", "signet-large",
    ]  # fmt: skip
    assert large["rss_share"] > 0
    measures = {row["measure"] for row in data["targets"] if row["figure"] == "cert-mgr"}
    assert "speedup at 5" in measures and "speedup at 10" in measures

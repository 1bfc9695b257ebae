"""``make sbom`` and ``make audit`` on the locked runtime set. The first run builds the
supply-chain tools' virtualenv (.tools/supply-venv, from PyPI: ~40 s); later runs take
seconds. The audit runs offline, against OSV databases made here and served on loopback
(``AUDIT_DB``): the public vulnerability services are not reachable from the test bed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.kube import ROOT
from tests.supply.lockfile import parse_lock


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_sbom_lists_every_locked_package_with_its_version(tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    result = make("sbom", f"SBOM={out}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    sbom = json.loads(out.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "signet"
    components = {(canonicalize_name(c["name"]), c["version"]): c for c in sbom["components"]}
    for entry in parse_lock():
        component = components.get((entry.name, entry.pinned))
        assert component is not None, f"{entry.name}=={entry.pinned} missing from the SBOM"
        assert component["purl"].startswith(f"pkg:pypi/{entry.name}@{entry.pinned}")
    assert len(sbom["components"]) == len(parse_lock())


def _record(package: str, events: list[dict[str, str]]) -> dict[str, object]:
    return {
        "id": "TEST-2026-0001",
        "aliases": ["CVE-2026-99999"],
        "summary": "a vulnerability made up for this test",
        "affected": [
            {
                "package": {"name": package, "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }


def test_audit_fails_on_a_known_vulnerability_and_passes_without(tmp_path: Path) -> None:
    pinned = next(e for e in parse_lock() if e.name == "pyyaml").pinned
    assert pinned is not None
    vulnerable = tmp_path / "vulnerable.json"
    vulnerable.write_text(json.dumps(_record("PyYAML", [{"introduced": "0"}, {"fixed": "99"}])))
    result = make("audit", f"AUDIT_DB={vulnerable}")
    assert result.returncode != 0
    assert f"VULNERABLE pyyaml=={pinned}: " in result.stdout
    assert "TEST-2026-0001" in result.stdout and "CVE-2026-99999" in result.stdout
    assert "fixed in: 99" in result.stdout

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps([_record("pyyaml", [{"introduced": "0"}, {"fixed": pinned}])]))
    result = make("audit", f"AUDIT_DB={fixed}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"audited {len(parse_lock())} locked packages" in result.stdout


def test_audit_that_could_not_ask_the_service_is_not_a_pass() -> None:
    unreachable = "AUDIT_ARGS=--osv-url http://127.0.0.1:9/v1/query"  # discard port: refused
    result = make("audit", "AUDIT_SERVICE=osv", unreachable)
    assert result.returncode != 0
    assert "NOT AUDITED" in result.stderr
    result = make("audit", "AUDIT_SERVICE=osv", unreachable, "AUDIT_UNAUDITED_OK=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "WARNING: NOT AUDITED" in result.stderr

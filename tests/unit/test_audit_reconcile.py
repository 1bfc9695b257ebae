"""``reconcile`` pairs Signet's signature records one to one with the KMS data-access log
and reports either side's leftovers; the CLI exits 1 on any."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from signet.kms.emulator.audit import AuditLog as KmsAuditLog
from signet.observe.audit import AuditLog
from signet.observe.audit_check import read_lines, read_records, reconcile

KEY = "projects/p/locations/global/keyRings/r/cryptoKeys/ca/cryptoKeyVersions/1"
OTHER = "projects/q/locations/global/keyRings/r/cryptoKeys/ca/cryptoKeyVersions/1"
T0 = datetime.datetime(2026, 11, 26, 23, 48, 13, tzinfo=datetime.UTC)
SERVICE = "google.cloud.kms.v1.KeyManagementService"


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def kms(
    seconds: float, key: str = KEY, method: str = "AsymmetricSign", code: int = 0
) -> dict[str, Any]:
    """An entry shaped like the emulator's (and Cloud Audit Logs')."""
    return {
        "timestamp": at(seconds).isoformat(timespec="microseconds"),
        "logName": "cloudaudit.googleapis.com%2Fdata_access",
        "protoPayload": {
            "serviceName": "cloudkms.googleapis.com",
            "methodName": f"{SERVICE}.{method}",
            "resourceName": key,
            "requestMetadata": {"callerIp": "ipv4:127.0.0.1:4242"},
            "status": {"code": code},
        },
    }


def signet(seconds: float, key: str = KEY, seq: int = 0) -> dict[str, Any]:
    return {
        "time": at(seconds).isoformat(timespec="milliseconds"),
        "kind": "signet.dev/signature",
        "seq": seq,
        "prev": "0" * 64,
        "keyVersion": key,
        "outcome": "signed",
        "certificate": {"namespace": "shop", "name": f"web-{seq}"},
    }


def signet_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signet.cli", "audit", "reconcile", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_pairs_one_to_one_per_key_version_under_concurrency() -> None:
    # 50 signatures on two keys, up to 8 in flight: records arrive in another order.
    times = [i * 0.01 for i in range(50)]
    entries = [kms(t, KEY if i % 2 else OTHER) for i, t in enumerate(times)]
    records = [
        signet(t + 0.075 - (i % 8) * 0.009, KEY if i % 2 else OTHER, seq=i)
        for i, t in enumerate(times)
    ]
    result = reconcile(records[::-1], entries)
    assert result.ok, result.to_json()
    assert len(result.matched) == result.kms_signatures == result.signet_signatures == 50
    assert len({id(m.kms) for m in result.matched}) == 50
    assert all(m.kms.key_version == m.signet.key_version for m in result.matched)


def test_a_kms_signature_without_a_record_is_reported_as_itself() -> None:
    entries = [kms(0), kms(20), kms(40)]
    records = [signet(20.004), signet(40.003)]  # the first signature has no record
    result = reconcile(records, entries)
    assert not result.ok
    assert [k.time for k in result.unrecorded] == [at(0)]
    assert not result.unsigned and len(result.matched) == 2
    assert max(m.delay for m in result.matched) < 0.01


def test_a_record_without_a_kms_signature_is_reported() -> None:
    entries = [kms(0), kms(10)]
    records = [signet(0.01, seq=1), signet(5, seq=2), signet(10.01, seq=3)]
    result = reconcile(records, entries)
    assert not result.ok and not result.unrecorded
    assert [s.record["seq"] for s in result.unsigned] == [2]


def test_failed_calls_and_other_methods_are_not_signatures() -> None:
    entries = [
        kms(0, code=grpc.StatusCode.UNAVAILABLE.value[0]),
        kms(0.5),
        kms(0.6, method="GetPublicKey"),
    ]
    result = reconcile([signet(0.51)], entries)
    assert result.ok and result.kms_signatures == 1


def test_records_outside_the_tolerance_do_not_pair() -> None:
    entries, records = [kms(0)], [signet(40)]
    late = reconcile(records, entries)
    assert len(late.unrecorded) == 1 and len(late.unsigned) == 1
    assert reconcile(records, entries, tolerance=60).ok


def test_key_prefix_and_time_window_leave_others_out() -> None:
    entries = [kms(-100), kms(0), kms(1, OTHER), kms(60), kms(200)]
    records = [signet(-99.99), signet(0.002), signet(60.01), signet(200.01)]
    whole = reconcile(records, entries)
    assert [k.key_version for k in whole.unrecorded] == [OTHER]

    result = reconcile(records, entries, key_prefix="projects/p/", since=at(-10), until=at(100))
    assert result.ok and len(result.matched) == 2
    assert (result.kms_signatures, result.signet_signatures) == (2, 2)


def test_pairs_across_the_edge_of_the_window() -> None:
    """A signature just before ``since`` whose record is just after is no gap."""
    result = reconcile([signet(0.004)], [kms(-0.001)], since=at(0))
    assert result.ok and len(result.matched) == 1


def test_signature_records_without_time_or_key_are_invalid() -> None:
    broken = signet(0)
    del broken["keyVersion"]
    result = reconcile([broken, {"kind": "signet.dev/delivery", "seq": 2}], [])
    assert not result.ok and "seq 0" in result.invalid[0]


def test_emulator_log_lines_are_read_as_written(tmp_path: Path) -> None:
    """The emulator's own writer, not a copy of its format."""
    path = tmp_path / "kms.jsonl"
    log = KmsAuditLog(path)
    for method in ("GetPublicKey", "AsymmetricSign"):
        metadata = {"user-agent": "signet/test"}
        log.record(method, KEY, grpc.StatusCode.OK, "", metadata, "ipv4:127.0.0.1:1", 0.001)
    log.close()
    audit_path = tmp_path / "audit.jsonl"
    AuditLog(audit_path).signature(keyVersion=KEY)
    result = reconcile(read_records(read_lines([audit_path])), read_records(read_lines([path])))
    assert result.ok and len(result.matched) == 1
    assert result.matched[0].kms.to_json()["userAgent"] == "signet/test"


def test_cli(tmp_path: Path) -> None:
    kms_log = write_jsonl(tmp_path / "kms.jsonl", [kms(0), kms(1), kms(2, OTHER)])
    rotated = write_jsonl(tmp_path / "audit.jsonl.1", [signet(0.003, seq=1)])
    current = write_jsonl(tmp_path / "audit.jsonl", [signet(1.002, seq=2)])
    since = at(-1).isoformat()

    clean = signet_audit(
        "--kms-log", str(kms_log), "--key-prefix", "projects/p/", str(rotated), str(current)
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("OK: 2 pair(s)")

    gap = signet_audit("--kms-log", str(kms_log), "--since", since, "--json", str(current))
    assert gap.returncode == 1, gap.stdout + gap.stderr
    report = json.loads(gap.stdout)
    assert sorted(k["keyVersion"] for k in report["unrecorded"]) == [KEY, OTHER]
    assert report["unrecorded"][0]["location"] == f"{kms_log}:1"
    assert report["matched"] == 1 and report["unsigned"] == []

    human = signet_audit("--kms-log", str(kms_log), str(current))
    assert human.returncode == 1
    assert "KMS signatures with no Signet record (2):" in human.stdout
    assert f"{kms_log}:1" in human.stdout

    # Cloud Logging's export: one JSON array, short method names, success without status.
    exported = [kms(0), kms(1)]
    for entry in exported:
        entry["protoPayload"]["methodName"] = "AsymmetricSign"
        del entry["protoPayload"]["status"]
    (tmp_path / "export.json").write_text(json.dumps(exported, indent=2))
    array = signet_audit("--kms-log", str(tmp_path / "export.json"), str(rotated), str(current))
    assert array.returncode == 0, array.stdout + array.stderr

    assert signet_audit("--kms-log", str(tmp_path / "none.jsonl"), str(current)).returncode == 2
    assert (
        signet_audit("--kms-log", str(kms_log), "--since", "yesterday", str(current)).returncode
        == 2
    )
    assert signet_audit(str(current)).returncode == 2  # --kms-log is required

"""`signet audit reconcile` against the KMS emulator's own audit log: signatures made
through the real client pair with Signet records, and one made without a record is named."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from signet.kms.emulator import EmulatorServer, Faults
from signet.observe.audit import AuditLog
from signet.observe.audit_check import read_lines, read_records, reconcile
from tests.kms_fixtures import KeyFactory, KmsRunner

SIGNATURES = 5


def test_every_emulator_signature_has_its_record(
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_faults: Faults,
    tmp_path: Path,
) -> None:
    kms_log = kms_emulator.audit.path
    assert kms_log is not None
    since = datetime.datetime.now(datetime.UTC)
    # A key of its own and a start time keep out what other tests sign on the shared emulator.
    version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    signer = kms_runner.signer(version)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    kms_faults.fail_next(1, grpc.StatusCode.UNAVAILABLE)  # a failed attempt signs nothing
    for i in range(SIGNATURES):
        kms_runner.run(signer.sign(f"tbsCertificate {i}".encode()))
        audit.signature(keyVersion=version, keyAlgorithm="EC_SIGN_P256_SHA256", n=i)

    command = [sys.executable, "-m", "signet.cli", "audit", "reconcile", "--json"]
    command += ["--kms-log", str(kms_log), "--key-prefix", version, "--since", since.isoformat()]
    command.append(str(audit_path))

    def check() -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode in (0, 1), done.stdout + done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, report

    code, report = check()
    assert code == 0, report
    assert report["kmsSignatures"] == report["signetSignatures"] == report["matched"] == SIGNATURES
    assert 0 <= report["maxDelaySeconds"] < 5
    direct = reconcile(
        read_records(read_lines([audit_path])),
        read_records(read_lines([kms_log])),
        key_prefix=version,
        since=since,
    )
    assert direct.ok and len(direct.matched) == SIGNATURES

    unrecorded_at = datetime.datetime.now(datetime.UTC)
    kms_runner.run(signer.sign(b"signed, never recorded"))

    code, report = check()
    assert code == 1
    assert report["matched"] == SIGNATURES and report["unsigned"] == []
    (missing,) = report["unrecorded"]
    assert missing["keyVersion"] == version
    assert datetime.datetime.fromisoformat(missing["time"]) >= unrecorded_at
    assert missing["userAgent"].startswith("signet/")

"""Emulator state survives restarts, the audit trail is useful and secret-free, and the
CLI bootstraps keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from google.cloud import kms_v1

from signet.kms.algorithms import make_verifier
from signet.kms.cloudkms import USER_AGENT
from signet.kms.emulator import EmulatorServer, build_arg_parser, serve
from signet.kms.emulator.cli import faults_from_args
from signet.kms.emulator.persistence import STATE_KEY_ENV, StateError
from tests.kms.conftest import fetch_public_key
from tests.kms_fixtures import KmsRunner, create_asymmetric_key, sync_admin_client

ROOT = Path(__file__).resolve().parents[2]


def _secret_forms(server: EmulatorServer, version: str) -> list[str]:
    """Encodings of the private key that must never appear in logs or state files."""
    key = server.store.get_version(version).private_key
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return [pem, base64.b64encode(der).decode(), der.hex(), "PRIVATE KEY"]


def _new_key(server: EmulatorServer, algorithm: str = "EC_SIGN_P256_SHA256") -> str:
    admin = sync_admin_client(server.address)
    ring = admin.create_key_ring(
        parent="projects/signet-dev/locations/global", key_ring_id="ring", key_ring=kms_v1.KeyRing()
    ).name
    return create_asymmetric_key(admin, ring, "ca", algorithm)


def test_state_survives_restart_sealed_at_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STATE_KEY_ENV, raising=False)
    state = tmp_path / "state"
    first = serve(state_dir=state)
    try:
        version = _new_key(first)
        pem_before, _ = fetch_public_key(sync_admin_client(first.address), version)
        secrets = _secret_forms(first, version)
    finally:
        first.stop()

    assert stat.S_IMODE(os.stat(state / "state.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "state.json").st_mode) == 0o600
    on_disk = (state / "state.json").read_text()
    assert version in on_disk
    assert not any(s in on_disk for s in secrets)

    second = serve(state_dir=state)
    try:
        admin = sync_admin_client(second.address)
        pem_after, public_key = fetch_public_key(admin, version)
        assert pem_after == pem_before
        digest = hashlib.sha256(b"after restart").digest()
        sig = admin.asymmetric_sign(name=version, digest=kms_v1.Digest(sha256=digest)).signature
        assert make_verifier("EC_SIGN_P256_SHA256", public_key)(sig, b"after restart")
        key_name = version.rsplit("/cryptoKeyVersions/", 1)[0]
        v2 = admin.create_crypto_key_version(
            parent=key_name, crypto_key_version=kms_v1.CryptoKeyVersion()
        )
        assert v2.name.endswith("/cryptoKeyVersions/2")  # version numbering persisted
    finally:
        second.stop()


def test_wrong_state_key_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_KEY_ENV, base64.b64encode(b"k" * 32).decode())
    server = serve(state_dir=tmp_path)
    try:
        _new_key(server, "EC_SIGN_ED25519")
    finally:
        server.stop()
    assert not (tmp_path / "state.key").exists()  # the env key was used, no file made
    monkeypatch.setenv(STATE_KEY_ENV, base64.b64encode(b"x" * 32).decode())
    with pytest.raises(StateError, match="cannot decrypt") as info:
        serve(state_dir=tmp_path)
    assert "x" * 32 not in str(info.value)


def test_audit_log_records_calls_without_key_material(
    kms_emulator: EmulatorServer, kms_runner: KmsRunner
) -> None:
    version = kms_emulator.ensure_key("audit", "ca", "EC_SIGN_P256_SHA256").name
    signer = kms_runner.signer(version)
    signature = kms_runner.run(signer.sign(b"audited"))
    kms_runner.run(kms_runner.client.get_crypto_key_version(name=version))

    path = kms_emulator.audit.path
    assert path is not None
    text = path.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    mine = [e["protoPayload"] for e in entries if e["protoPayload"]["resourceName"] == version]
    methods = [p["methodName"].rsplit(".", 1)[1] for p in mine]
    assert methods[-3:] == ["GetPublicKey", "AsymmetricSign", "GetCryptoKeyVersion"]
    sign_entry = mine[-2]
    assert sign_entry["status"]["codeName"] == "OK"
    assert USER_AGENT in sign_entry["requestMetadata"]["callerSuppliedUserAgent"]
    assert sign_entry["requestMetadata"]["callerIp"].startswith("ipv4:127.0.0.1")
    assert all("timestamp" in e for e in entries)
    forbidden = [*_secret_forms(kms_emulator, version), base64.b64encode(signature).decode()]
    assert not any(s in text for s in forbidden)


def _start_cli(args: list[str], lines: int) -> tuple[subprocess.Popen[str], list[str]]:
    """Run ``python -m signet.kms.emulator ARGS``; return it and its first output lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    env.pop(STATE_KEY_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "signet.kms.emulator", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, [proc.stdout.readline().strip() for _ in range(lines)]


def _terminate(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    assert proc.wait(60) == 0  # a bound against a hang: a loaded machine stops it slowly


def test_cli_bootstraps_keys_and_serves(tmp_path: Path) -> None:
    args = [
        "--port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "--audit-log",
        str(tmp_path / "audit.jsonl"),
        "--project",
        "proj-1",
        "--create",
        "ring/p256:EC_SIGN_P256_SHA256",
        "--create",
        "ring/ed:EC_SIGN_ED25519",
    ]
    base = "projects/proj-1/locations/global/keyRings/ring/cryptoKeys"
    expected = [f"{base}/p256/cryptoKeyVersions/1", f"{base}/ed/cryptoKeyVersions/1"]
    proc, out = _start_cli(args, 3)
    try:
        assert out[0].startswith("listening on 127.0.0.1:"), out
        assert out[1:] == expected
        admin = sync_admin_client(out[0].removeprefix("listening on "))
        signed = admin.asymmetric_sign(request={"name": expected[1], "data": b"hello"})
        assert signed.name == expected[1] and signed.signature
        pem = admin.get_public_key(name=expected[0]).pem
    finally:
        _terminate(proc)
    assert "AsymmetricSign" in (tmp_path / "audit.jsonl").read_text()

    # Re-running the bootstrap against the persisted state is idempotent: same key.
    proc, out = _start_cli(args, 3)
    try:
        assert out[1:] == expected
        admin = sync_admin_client(out[0].removeprefix("listening on "))
        assert admin.get_public_key(name=expected[0]).pem == pem
    finally:
        _terminate(proc)


def test_cli_rejects_bad_create_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from signet.kms.emulator import main

    with pytest.raises(SystemExit):
        main(["--create", "ring-only:EC_SIGN_P256_SHA256"])
    assert "KEYRING/KEY:ALGORITHM" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--create", "r/k:AES_256"])
    assert "unknown algorithm" in capsys.readouterr().err


def test_cli_fault_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNET_KMS_EMULATOR_LATENCY_MS", "40")
    monkeypatch.setenv("SIGNET_KMS_EMULATOR_SIGN_QPS", "7")
    args = build_arg_parser().parse_args(
        ["--error-rate", "0.25", "--error-code", "permission_denied"]
    )
    faults = faults_from_args(args)
    assert faults.latency_s == pytest.approx(0.04)
    assert faults.sign_qps == 7
    assert faults.error_rate == 0.25
    assert faults.error_code is grpc.StatusCode.PERMISSION_DENIED

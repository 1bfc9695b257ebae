"""One signer contract, two backends: Cloud KMS (emulator) and PKCS#11 (SoftHSM2).

Each test runs on both (see ``conftest.Backend``). The judges are independent of the
code under test: ``openssl verify -x509_strict`` for X.509 and ``ssh-keygen -L`` (which
checks the CA signature while parsing) for OpenSSH certificates.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.kms import pkcs11pool
from signet.kms.algorithms import Padding, get_algorithm, make_verifier
from signet.kms.cloudkms import RetryPolicy
from signet.kms.emulator import serve
from signet.kms.errors import (
    KmsError,
    KmsKeyDisabled,
    KmsKeyNotFound,
    KmsLoginFailed,
    KmsTokenNotFound,
    KmsWrongAlgorithm,
)
from signet.kms.limiter import SignLimiter
from signet.kms.pkcs11signer import Pkcs11Signer
from signet.kms.signer import Signer
from signet.pki.keys import generate_private_key
from signet.pki.kmskey import sign_in_thread
from signet.pki.request import LeafRequest
from signet.pki.ssh import SshCertRequest, build_ssh_certificate
from signet.pki.x509 import build_leaf, build_self_signed_ca
from tests.kms.conformance.conftest import ALGORITHMS, Backend, pkcs11_signer
from tests.kms_fixtures import KmsRunner, create_asymmetric_key, sync_admin_client
from tests.softhsm import LOCKED_KEY, LOCKED_TOKEN, SoftHsm

pytestmark = pytest.mark.timeout(180)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_signs_what_openssl_and_ssh_keygen_accept(
    backend: Backend, algorithm: str, tmp_path: Path
) -> None:
    signer = backend.signer(algorithm, expected_algorithm=algorithm)
    assert backend.run(signer.public_key()).algorithm == algorithm
    ca = backend.run(
        sign_in_thread(
            signer,
            lambda key: build_self_signed_ca(
                key, f"conformance {algorithm}", datetime.timedelta(1)
            ),
        )
    )
    leaf_key = generate_private_key("ECDSA", 256)
    request = LeafRequest(dns_names=("svc.example.org",), duration=datetime.timedelta(hours=1))
    leaf = backend.run(
        sign_in_thread(signer, lambda key: build_leaf(request, leaf_key.public_key(), ca, key))
    )
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "leaf.pem").write_bytes(_pem(leaf))
    verify = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    if get_algorithm(algorithm).padding is Padding.PSS:
        return  # OpenSSH has no RSA-PSS CA keys
    ssh_request = SshCertRequest("user", "conformance", ("alice",), datetime.timedelta(hours=1))
    cert = backend.run(
        sign_in_thread(
            signer, lambda key: build_ssh_certificate(ssh_request, leaf_key.public_key(), key)
        )
    )
    (tmp_path / "id-cert.pub").write_bytes(cert.public_bytes() + b"\n")
    listed = subprocess.run(
        ["ssh-keygen", "-L", "-f", "id-cert.pub"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout


def test_a_missing_key_is_key_not_found(backend: Backend) -> None:
    with pytest.raises(KmsKeyNotFound) as info:
        backend.run(backend.missing().sign(b"data"))
    assert info.value.reason == "KMSKeyNotFound"


def test_a_key_that_may_not_sign_is_disabled(backend: Backend) -> None:
    with pytest.raises(KmsKeyDisabled) as info:
        backend.run(backend.disabled().sign(b"data"))
    assert info.value.reason == "KMSKeyDisabled"


def test_the_wrong_algorithm_is_refused(backend: Backend) -> None:
    with pytest.raises(KmsWrongAlgorithm) as info:
        backend.run(backend.wrong_algorithm().public_key())
    assert "RSA" in str(info.value)


async def _sign_many(
    signer: Signer, limiter: SignLimiter, count: int
) -> tuple[list[tuple[bytes, bytes]], int]:
    """``count`` signatures over distinct data, all submitted at once; returns them with
    the peak number of signatures in flight (the limiter bounds it)."""
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, limiter.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    data = [f"message {i}".encode() for i in range(count)]
    try:
        signatures = await asyncio.gather(*(signer.sign(d) for d in data))
    finally:
        done.set()
        await watcher
    return list(zip(data, signatures, strict=True)), peak


def test_sixteen_signatures_in_flight_are_each_correct(backend: Backend) -> None:
    limiter = backend.run(_make_limiter(16))
    signer = backend.signer("EC_SIGN_P256_SHA256", limiter=limiter)
    public = backend.run(signer.public_key())
    signed, peak = backend.run(_sign_many(signer, limiter, 96))
    verify = make_verifier(public.algorithm, public.public_key)
    assert all(verify(signature, data) for data, signature in signed)
    assert len({signature for _, signature in signed}) == len(signed)
    assert 1 < peak <= 16


async def _make_limiter(max_concurrency: int) -> SignLimiter:
    return SignLimiter(max_concurrency=max_concurrency)


async def _batch_across(
    signer: Signer, count: int, restart: Any, after: int
) -> list[tuple[bytes, bytes | BaseException]]:
    """Sign ``count`` messages with 16 in flight; once ``after`` are done, ``restart()``
    (blocking, run in a thread) restarts the backend underneath the rest. Each result is
    the signature or the error that sign ended with."""
    limiter = SignLimiter(max_concurrency=16)
    finished = 0

    enough = asyncio.Event()

    async def one(i: int) -> tuple[bytes, bytes | BaseException]:
        nonlocal finished
        data = f"batch {i}".encode()
        async with limiter.slot(time.monotonic() + 60, "batch"):
            try:
                result: bytes | BaseException = await signer.sign(data)
            except KmsError as error:
                result = error
        finished += 1
        if finished >= after:
            enough.set()
        return data, result

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await enough.wait()
    await asyncio.to_thread(restart)
    return list(await asyncio.gather(*tasks))


def _check_recovered(
    signer: Signer, run: Any, results: list[tuple[bytes, bytes | BaseException]]
) -> None:
    """Every signature returned verifies; a sign cut off by the restart failed with a
    typed, retryable error (the operator retries it on its backoff); and signing works
    again afterwards."""
    public = run(signer.public_key())
    verify = make_verifier(public.algorithm, public.public_key)
    for data, result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, KmsError) and not result.reason.permanent, result
        else:
            assert verify(result, data)
    assert sum(isinstance(r, bytes) for _, r in results) >= len(results) // 2
    assert verify(run(signer.sign(b"after the restart")), b"after the restart")


def test_a_backend_restart_mid_batch_is_recovered(
    backend: Backend, tmp_path: Path, softhsm_if_pkcs11: SoftHsm | None
) -> None:
    if backend.name == "cloudkms":
        _cloudkms_restart(tmp_path)
    else:
        assert softhsm_if_pkcs11 is not None
        _softhsm_restart(backend, softhsm_if_pkcs11, tmp_path)


@pytest.fixture
def softhsm_if_pkcs11(request: pytest.FixtureRequest, backend: Backend) -> SoftHsm | None:
    return request.getfixturevalue("softhsm") if backend.name == "pkcs11" else None


def _softhsm_restart(backend: Backend, hsm: SoftHsm, tmp_path: Path) -> None:
    """The token's sessions die as in a token re-insert or HSM daemon restart: the real
    module is finalized and initialized again under the pool's feet (between C calls, as a
    real restart would interleave with them)."""
    signer = backend.signer("EC_SIGN_P256_SHA256", retry=RetryPolicy(deadline=60))
    assert isinstance(signer, Pkcs11Signer)
    backend.run(signer.public_key())
    module = signer.pool.module if signer.pool is not None else None
    assert module is not None
    before = module.generation

    def restart() -> None:
        with module.gate.exclusive():
            module.lib.reinitialize()

    results = backend.run(_batch_across(signer, 96, restart, after=16), timeout=120)
    _check_recovered(signer, backend.run, results)
    assert all(isinstance(r, bytes) for _, r in results)  # a lost session is retried
    assert module.generation > before  # the pool noticed and recovered, once or more


def _cloudkms_restart(tmp_path: Path) -> None:
    """The emulator process goes away and comes back on the same port with its state."""
    os.environ.pop("SIGNET_KMS_STATE_KEY", None)
    state = tmp_path / "state"
    server = serve(state_dir=state)
    admin = sync_admin_client(server.address)
    ring = admin.create_key_ring(
        request={"parent": "projects/signet-test/locations/global", "key_ring_id": "restart"}
    ).name
    version = create_asymmetric_key(admin, ring, "ca", "EC_SIGN_P256_SHA256")
    runner = KmsRunner(server.address)
    servers = [server]
    try:
        signer = runner.signer(version, retry=RetryPolicy(deadline=60))
        runner.run(signer.public_key())

        def restart() -> None:
            servers[-1].stop(grace=0)
            servers.append(serve(port=server.port, state_dir=state))

        results = runner.run(_batch_across(signer, 96, restart, after=16), timeout=120)
        _check_recovered(signer, runner.run, results)
        assert len(servers) == 2
    finally:
        runner.close()
        servers[-1].stop()


def test_no_pin_or_key_material_in_any_log_line(
    backend: Backend, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    signer = backend.signer("EC_SIGN_P256_SHA256")
    backend.run(signer.sign(b"logged?"))
    for failing in (backend.missing(), backend.disabled()):
        with pytest.raises(KmsError) as info:
            backend.run(failing.sign(b"x"))
        logging.getLogger("conformance").error("failed: %s", info.value)
    text = "\n".join(
        record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        for record in caplog.records
    )
    assert "PRIVATE KEY" not in text
    for secret in backend.secrets:
        assert secret not in text


def test_a_wrong_pin_is_login_failed_and_never_shown(
    softhsm: SoftHsm, kms_runner: KmsRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_pin = "13572468"
    uri = f"pkcs11:token={LOCKED_TOKEN};object={LOCKED_KEY[0]}"
    signer = pkcs11_signer(softhsm, uri, wrong_pin, tmp_path)
    with pytest.raises(KmsLoginFailed) as info:
        kms_runner.run(signer.public_key())
    assert info.value.reason == "HSMLoginFailed"
    assert "PinIncorrect" in str(info.value)
    shown = str(info.value) + "\n".join(r.getMessage() for r in caplog.records)
    assert wrong_pin not in shown and softhsm.pin not in shown


def test_an_unknown_token_is_token_not_found(
    softhsm: SoftHsm, kms_runner: KmsRunner, tmp_path: Path
) -> None:
    uri = softhsm.uri("EC_SIGN_P256_SHA256", token="no-such-token")
    signer = pkcs11_signer(softhsm, uri, softhsm.pin, tmp_path)
    with pytest.raises(KmsTokenNotFound) as info:
        kms_runner.run(signer.public_key())
    assert "no token 'no-such-token'" in str(info.value)


def test_one_login_per_token_and_bounded_sessions(
    softhsm: SoftHsm, kms_runner: KmsRunner, tmp_path: Path
) -> None:
    """Two keys of one token share its pool; the pool never holds more sessions than the
    module has workers, however many signatures were asked for."""
    first = pkcs11_signer(softhsm, softhsm.uri("EC_SIGN_P256_SHA256"), softhsm.pin, tmp_path)
    second = pkcs11_signer(softhsm, softhsm.uri("EC_SIGN_ED25519"), softhsm.pin, tmp_path)

    async def many() -> None:
        await asyncio.gather(*(s.sign(b"m") for s in (first, second) for _ in range(40)))

    kms_runner.run(many())
    assert first.pool is second.pool and first.pool is not None
    assert len(first.pool._idle) <= first.pool.module.max_sessions
    assert pkcs11pool.load_module("x", softhsm.module) is first.pool.module


def test_a_refused_pin_is_not_offered_again(
    softhsm: SoftHsm, kms_runner: KmsRunner, tmp_path: Path
) -> None:
    """HSMs lock a PIN after a few wrong tries; the operator retries a failing issuer for
    ever, so the same wrong PIN must reach the token once only."""
    uri = f"pkcs11:token={LOCKED_TOKEN};object={LOCKED_KEY[0]}"
    wrong = "97531864"
    with pytest.raises(KmsLoginFailed):
        kms_runner.run(pkcs11_signer(softhsm, uri, wrong, tmp_path).public_key())
    with pytest.raises(KmsLoginFailed, match="not offered again"):
        kms_runner.run(pkcs11_signer(softhsm, uri, wrong, tmp_path).public_key())


def test_an_issuer_must_know_the_pin_of_a_token_already_logged_in(
    softhsm: SoftHsm, kms_runner: KmsRunner, tmp_path: Path
) -> None:
    """A login holds for the whole process: without this check any issuer naming the
    token could sign with a key another issuer unlocked."""
    uri = softhsm.uri("EC_SIGN_P256_SHA256")
    kms_runner.run(pkcs11_signer(softhsm, uri, softhsm.pin, tmp_path).sign(b"logged in"))
    (tmp_path / "intruder").mkdir()
    intruder = pkcs11_signer(softhsm, uri, "00000000", tmp_path / "intruder")
    with pytest.raises(KmsLoginFailed, match="differs from the one this process logged in"):
        kms_runner.run(intruder.sign(b"without the PIN"))

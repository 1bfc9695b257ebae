"""The two signing backends behind one face, so every conformance test runs on both.

``backend`` is parametrized over the Cloud KMS emulator (through the real
``google-cloud-kms`` client) and a SoftHSM2 token (through python-pkcs11). Each
:class:`Backend` hands out signers bound to the session's background loop and knows how
to make the failures the contract promises a typed error for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import kms_v1
from google.protobuf import field_mask_pb2

from signet.api.pkcs11uri import parse_pkcs11_key
from signet.kms import pkcs11pool
from signet.kms.backends import open_signer
from signet.kms.cloudkms import RetryPolicy
from signet.kms.pkcs11signer import Pkcs11Signer
from signet.kms.signer import Signer
from tests.kms_fixtures import KeyFactory, KmsRunner
from tests.softhsm import NO_SIGN_KEY, SoftHsm

ALGORITHMS = [
    "EC_SIGN_P256_SHA256",
    "EC_SIGN_P384_SHA384",
    "RSA_SIGN_PKCS1_2048_SHA256",
    "RSA_SIGN_PSS_2048_SHA256",
    "EC_SIGN_ED25519",
]
"""What both backends must sign with (the token's key types and sizes)."""
MAX_SESSIONS = 16
"""Pooled sessions of the SoftHSM module in this process."""


def pin_file(tmp: Path, pin: str) -> str:
    path = tmp / "pin"
    path.write_text(pin + "\n")
    return str(path)


@dataclass
class Backend:
    """One backend as the tests see it."""

    name: str
    runner: KmsRunner
    signer: Callable[..., Signer]
    """``signer(algorithm, **options)``: a fresh signer for the shared key."""
    missing: Callable[[], Signer]
    """A signer for a key that does not exist."""
    disabled: Callable[[], Signer]
    """A signer for a key that exists but may not sign."""
    wrong_algorithm: Callable[[], Signer]
    """A signer configured for RSA over an EC P-256 key."""
    secrets: tuple[str, ...] = ()
    """Strings that must never reach a log line (the PIN)."""

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return self.runner.run(coro, timeout)


def _set_state(admin: kms_v1.KeyManagementServiceClient, name: str, state: str) -> None:
    admin.update_crypto_key_version(
        crypto_key_version=kms_v1.CryptoKeyVersion(name=name, state=state),
        update_mask=field_mask_pb2.FieldMask(paths=["state"]),
    )


def cloudkms_backend(
    runner: KmsRunner, keys: KeyFactory, admin: kms_v1.KeyManagementServiceClient
) -> Backend:
    def signer(algorithm: str, **options: Any) -> Signer:
        return runner.signer(keys(algorithm), **options)

    def disabled() -> Signer:
        version = keys("EC_SIGN_P256_SHA256", fresh=True)
        _set_state(admin, version, "DISABLED")
        return runner.signer(version)

    def missing() -> Signer:
        version = keys("EC_SIGN_P256_SHA256")
        return runner.signer(version.replace("/cryptoKeyVersions/1", "/cryptoKeyVersions/99"))

    def wrong() -> Signer:
        return runner.signer(
            keys("EC_SIGN_P256_SHA256"), expected_algorithm="RSA_SIGN_PKCS1_2048_SHA256"
        )

    return Backend("cloudkms", runner, signer, missing, disabled, wrong)


def pkcs11_signer(
    hsm: SoftHsm,
    uri: str,
    pin: str,
    tmp: Path,
    algorithm: str | None = None,
    retry: RetryPolicy | None = None,
    **options: Any,
) -> Pkcs11Signer:
    raw = {"uri": uri, "module": hsm.module, "pinFile": pin_file(tmp, pin)}
    if algorithm is not None:
        raw["algorithm"] = algorithm
    key = parse_pkcs11_key(raw)
    pkcs11pool.load_module(key.uri.canonical, hsm.module, MAX_SESSIONS)
    signer = open_signer(key.uri.canonical, key, kms_client=None, retry=retry, **options)
    assert isinstance(signer, Pkcs11Signer)
    return signer


def softhsm_backend(runner: KmsRunner, hsm: SoftHsm, tmp: Path) -> Backend:
    def signer(algorithm: str, **options: Any) -> Signer:
        options.pop("expected_algorithm", None)
        return pkcs11_signer(hsm, hsm.uri(algorithm), hsm.pin, tmp, algorithm, **options)

    def disabled() -> Signer:
        label, _key_id = NO_SIGN_KEY
        return pkcs11_signer(hsm, f"pkcs11:token={hsm.token};object={label}", hsm.pin, tmp)

    def missing() -> Signer:
        uri = hsm.uri("EC_SIGN_P256_SHA256", label="no-such-key")
        return pkcs11_signer(hsm, uri.split(";id=")[0], hsm.pin, tmp)

    def wrong() -> Signer:
        uri = hsm.uri("EC_SIGN_P256_SHA256")
        return pkcs11_signer(hsm, uri, hsm.pin, tmp, "RSA_SIGN_PKCS1_2048_SHA256")

    return Backend("pkcs11", runner, signer, missing, disabled, wrong, (hsm.pin,))


@pytest.fixture(params=["cloudkms", "pkcs11"])
def backend(
    request: pytest.FixtureRequest,
    kms_runner: KmsRunner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    """Each conformance test once per backend."""
    if request.param == "cloudkms":
        yield cloudkms_backend(
            kms_runner,
            request.getfixturevalue("kms_key_factory"),
            request.getfixturevalue("kms_admin"),
        )
    else:
        hsm: SoftHsm = request.getfixturevalue("softhsm")
        yield softhsm_backend(kms_runner, hsm, tmp_path_factory.mktemp("pin"))


async def gather_limited(coros: list[Any]) -> list[Any]:
    """Run coroutines concurrently (the limiter bounds how many are in flight)."""
    return list(await asyncio.gather(*coros))

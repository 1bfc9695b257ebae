"""pytest plugin: a SoftHSM2 token for the PKCS#11 backend, made fresh per test session.

``SOFTHSM2_CONF`` is pointed at a temporary folder in ``pytest_configure``, before any
fixture runs, so that every process the session starts (the operator included) sees the
same tokens and none touches the machine's own ``/var/lib/softhsm``.

Fixtures
--------
``softhsm`` (session)
    A :class:`SoftHsm` with one initialised token (:data:`TOKEN`, user PIN :data:`PIN`)
    holding one key pair per algorithm (:data:`KEYS`); ``softhsm.uri(algorithm)`` is the
    key's ``pkcs11:`` URI and ``softhsm.module`` the library path. Skips when SoftHSM2
    is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN = "signet-test"
SO_PIN = "87654321"
PIN = "24681357"
"""The test token's user PIN: tests assert it never reaches a log line."""

KEYS = {
    "EC_SIGN_P256_SHA256": ("ec-p256", "01"),
    "EC_SIGN_P384_SHA384": ("ec-p384", "02"),
    "RSA_SIGN_PKCS1_2048_SHA256": ("rsa-2048", "03"),
    "RSA_SIGN_PSS_2048_SHA256": ("rsa-2048", "03"),
    "EC_SIGN_ED25519": ("ed25519", "04"),
}
"""Algorithm -> (object label, hex id). The two RSA algorithms share one key: the padding
is the Issuer's choice (``spec.kms.pkcs11.algorithm``), not the key's."""
NO_SIGN_KEY = ("no-sign", "05")
"""An EC key whose CKA_SIGN is false."""
LOCKED_TOKEN = "signet-locked"
"""A second token that is only ever offered wrong PINs: a login is per token and process
(PKCS#11 semantics), so a wrong PIN is only noticed by a token nobody logged in to."""
LOCKED_KEY = ("ec-p256", "01")


def module_path() -> str | None:
    """Where SoftHSM2's PKCS#11 library is installed, if it is."""
    return next((p for p in MODULE_CANDIDATES if os.path.exists(p)), None)


_CONF_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _CONF_DIR
    if module_path() is None or "SOFTHSM2_CONF" in os.environ:
        return
    _CONF_DIR = tempfile.mkdtemp(prefix="signet-softhsm-")
    tokens = Path(_CONF_DIR) / "tokens"
    tokens.mkdir()
    conf = Path(_CONF_DIR) / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CONF_DIR is not None:
        shutil.rmtree(_CONF_DIR, ignore_errors=True)


@dataclass
class SoftHsm:
    """The session's token; see the module docstring."""

    module: str
    token: str = TOKEN
    pin: str = PIN
    labels: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(KEYS))

    def uri(self, algorithm: str, *, token: str | None = None, label: str | None = None) -> str:
        """The key URI of ``algorithm``'s key (``token``/``label`` override for tests of
        a wrong name)."""
        name, key_id = self.labels[algorithm]
        key_id_pct = "".join(f"%{key_id[i : i + 2]}" for i in range(0, len(key_id), 2))
        return f"pkcs11:token={token or self.token};object={label or name};id={key_id_pct}"


def _init_token(label: str) -> None:
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )


def _generate_keys(module: str) -> None:
    """The tokens' key pairs, made with python-pkcs11 through the real module."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_named_curve_parameters

    lib = pkcs11.lib(module)
    with lib.get_token(token_label=LOCKED_TOKEN).open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(store=True, label=LOCKED_KEY[0], id=bytes.fromhex(LOCKED_KEY[1]))
    token = lib.get_token(token_label=TOKEN)
    with token.open(rw=True, user_pin=PIN) as session:

        def ec(curve: str, label: str, key_id: str, sign: bool = True) -> None:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
            )
            params.generate_keypair(
                store=True,
                label=label,
                id=bytes.fromhex(key_id),
                private_template={Attribute.SIGN: sign},
            )

        ec("secp256r1", *KEYS["EC_SIGN_P256_SHA256"])
        ec("secp384r1", *KEYS["EC_SIGN_P384_SHA384"])
        ec("secp256r1", *NO_SIGN_KEY, sign=False)
        label, key_id = KEYS["RSA_SIGN_PKCS1_2048_SHA256"]
        session.generate_keypair(
            KeyType.RSA, 2048, store=True, label=label, id=bytes.fromhex(key_id)
        )
        ed = session.create_domain_parameters(
            KeyType.EC_EDWARDS,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")},
            local=True,
        )
        label, key_id = KEYS["EC_SIGN_ED25519"]
        ed.generate_keypair(
            store=True,
            label=label,
            id=bytes.fromhex(key_id),
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHsm]:
    """The session token (see the module docstring)."""
    module = module_path()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    _init_token(TOKEN)
    _init_token(LOCKED_TOKEN)
    _generate_keys(module)
    yield SoftHsm(module)

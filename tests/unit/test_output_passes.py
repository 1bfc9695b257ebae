"""Reconcile passes for a Certificate's Secret outputs, as table rows on the recorded
apiserver and the real KMS emulator (see test_certificate_passes): the exact API calls, and
never a signature more than the certificate itself costs."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from signet.kms.emulator import Counters
from tests.operator.harness import certificate_manifest
from tests.unit.bed import signs as _signs
from tests.unit.test_certificate_passes import NS, Bed, bed, key

__all__ = ["bed", "key"]  # fixtures, used by name

KEYSTORE = {
    "pkcs12": {"create": True, "passwordSecretRef": {"name": "store-password", "key": "pw"}}
}


def _password(bed: Bed, value: bytes = b"changeit") -> None:
    bed.api.put(
        "Secret",
        {
            "metadata": {"name": "store-password", "namespace": NS},
            "data": {"pw": base64.b64encode(value).decode()},
        },
    )


def _data(bed: Bed) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in bed.secret()["data"].items()}


def test_a_missing_password_fails_before_kms_and_backs_off(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key, keystores=KEYSTORE)
        await bed.reconcile()
        assert bed.ready() == ("False", "KeystorePasswordNotFound")
        message = bed.status()["conditions"][0]["message"]
        assert f"key 'pw' of Secret {NS}/store-password" in message
        assert [m for m, _ in bed.api.writes()] == ["patch_status", "create_event"]
        assert bed.next_look() == pytest.approx(2)
        assert bed.watch() is None  # its own failure status does not start a pass

        _password(bed, b"")  # there, but empty: still not a password
        bed.now += datetime.timedelta(seconds=2)
        await bed.reconcile()
        assert bed.ready() == ("False", "KeystorePasswordNotFound")
        assert bed.next_look() == pytest.approx(4)

        _password(bed)
        bed.now += datetime.timedelta(seconds=4)
        await bed.reconcile()
        assert bed.ready() == ("True", "Ready")
        assert {"keystore.p12", "truststore.p12"} <= set(_data(bed))
        assert "changeit" not in str(bed.status()) + str(bed.api.events)

    bed(scenario)
    assert _signs(kms_counters, key) == 2  # the CA bootstrap and one leaf


def test_an_output_change_is_one_replace_and_no_signature(
    bed: Any, key: str, kms_counters: Counters
) -> None:
    async def scenario(bed: Bed) -> None:
        await bed.start(key)
        await bed.reconcile()
        issued = _data(bed)
        serial = bed.status()["serialNumber"]
        assert issued["tls.key"].startswith(b"-----BEGIN EC PRIVATE KEY-----")  # PKCS1

        changed = certificate_manifest(
            "web",
            NS,
            "ca",
            privateKey={"encoding": "PKCS8"},
            additionalOutputFormats=[{"type": "DER"}, {"type": "CombinedPEM"}],
        )
        bed.api.put("Certificate", {**changed, "status": bed.status()})
        assert bed.watch() is not None
        await bed.reconcile()
        assert [m for m, _ in bed.api.writes()] == ["replace_secret", "create_event"]
        assert bed.api.events[-1]["reason"] == "SecretRepaired"
        data = _data(bed)
        assert data["tls.crt"] == issued["tls.crt"]
        assert data["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")
        assert data["tls-combined.pem"] == data["tls.key"] + b"\n" + data["tls.crt"]
        assert bed.status()["serialNumber"] == serial
        assert bed.ready() == ("True", "Ready")

        await bed.reconcile()  # settled: nothing more to write
        assert bed.api.writes() == []

    bed(scenario)
    assert _signs(kms_counters, key) == 2

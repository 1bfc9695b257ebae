"""`signet renew`: the operator re-issues, also when the Secret was written this second."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from signet.ops.renew import RENEW_ANNOTATION, stamp_after
from tests.kube import Kube
from tests.operator.harness import (
    certificate_manifest,
    condition,
    get_certificate,
    wait_condition,
)
from tests.ops.cli import signet

UTC = datetime.UTC


def _reissued(kube: Kube, namespace: str, name: str, old_serial: str) -> dict[str, Any]:
    obj = wait_condition(
        kube, namespace, name, where=lambda o: o["status"].get("serialNumber") != old_serial
    )
    assert "because ManuallyTriggered" in condition(obj, "Issuing")["message"]
    return obj


@pytest.mark.cluster
def test_renew_one_certificate_right_after_issuance(
    crds: Kube, namespace: str, issuer: dict[str, Any]
) -> None:
    crds.apply(certificate_manifest("web", namespace, "ca"))
    first = wait_condition(crds, namespace, "web")
    issued_at = crds.core.read_namespaced_secret("web-identity", namespace).metadata.annotations[
        "signet.dev/issued-at"
    ]
    # Immediately: the Secret's issued-at is most likely this very second, which is the
    # case a naive stamp gets wrong (equal stamps are not "later").
    result = signet("renew", "web", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert result.code == 0, result.err
    stamp = get_certificate(crds, namespace, "web")["metadata"]["annotations"][RENEW_ANNOTATION]
    assert result.out.strip() == (
        f"Manually triggered issuance of Certificate {namespace}/web ({RENEW_ANNOTATION}={stamp})"
    )
    assert stamp > issued_at
    second = _reissued(crds, namespace, "web", first["status"]["serialNumber"])
    assert second["status"]["revision"] == first["status"]["revision"] + 1


@pytest.mark.cluster
def test_renew_all_in_a_namespace(crds: Kube, namespace: str, issuer: dict[str, Any]) -> None:
    serials = {}
    for name in ("a", "b"):
        crds.apply(certificate_manifest(name, namespace, "ca"))
    for name in ("a", "b"):
        serials[name] = wait_condition(crds, namespace, name)["status"]["serialNumber"]
    result = signet("renew", "--all", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2
    for name, serial in serials.items():
        _reissued(crds, namespace, name, serial)


@pytest.mark.cluster
def test_renew_refuses_unknown_names_and_bad_arguments(crds: Kube, namespace: str) -> None:
    missing = signet("renew", "ghost", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert missing.code == 1
    assert missing.err == f"error: Certificate {namespace}/ghost not found\n"
    nothing = signet("renew", "--all", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert (nothing.code, nothing.err) == (1, f"error: no Certificates in namespace {namespace}\n")
    both = signet("renew", "x", "--all", kubeconfig=crds.kubeconfig)
    assert (both.code, both.err) == (1, "error: name one or more Certificates, or pass --all\n")
    stray = signet("renew", "x", "-A", kubeconfig=crds.kubeconfig)
    assert (stray.code, stray.err) == (1, "error: -A/--all-namespaces needs --all\n")


def test_stamp_waits_for_the_second_after_the_latest_issuance() -> None:
    issued = datetime.datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
    clock = [datetime.datetime(2030, 1, 1, 12, 0, 5, 300_000, tzinfo=UTC)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += datetime.timedelta(seconds=seconds)

    stamp = stamp_after([issued - datetime.timedelta(hours=1), issued], lambda: clock[0], sleep)
    assert stamp == "2030-01-01T12:00:06Z"
    assert len(slept) == 1 and 0.7 <= slept[0] <= 0.72

    slept.clear()
    later = datetime.datetime(2030, 1, 1, 12, 0, 7, tzinfo=UTC)
    assert stamp_after([issued], lambda: later, sleep) == "2030-01-01T12:00:07Z"
    assert stamp_after([], lambda: later, sleep) == "2030-01-01T12:00:07Z"
    assert slept == []

"""A restart over healthy Certificates costs no signature, no Secret write, no status write."""

from __future__ import annotations

import time
from typing import Any

import pytest

from signet.api import GROUP, VERSION
from signet.kms.emulator import Counters
from tests.kube import Kube, eventually
from tests.operator.harness import OperatorProcess, certificate_manifest, wait_condition

pytestmark = pytest.mark.cluster


def _versions(kube: Kube, namespace: str) -> dict[str, str]:
    secrets = {
        f"secret/{s.metadata.name}": s.metadata.resource_version
        for s in kube.core.list_namespaced_secret(namespace).items
    }
    certs = kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "certificates")
    return {
        **secrets,
        **{
            f"cert/{c['metadata']['name']}": c["metadata"]["resourceVersion"]
            for c in certs["items"]
        },
    }


def test_restart_issues_nothing_for_healthy_certificates(
    crds: Kube,
    namespace: str,
    issuer: dict[str, Any],
    signet_operator: OperatorProcess,
    kms_counters: Counters,
) -> None:
    names = [f"c{i}" for i in range(20)]
    for name in names:
        crds.apply(certificate_manifest(name, namespace, "ca"))
    crds.apply(
        certificate_manifest(
            "ssh", namespace, "ca", ssh={"type": "user", "principals": [f"{namespace}-x"]}
        )
    )
    for name in [*names, "ssh"]:
        wait_condition(crds, namespace, name)
    time.sleep(1)  # let the last status patches' watch events settle
    before = _versions(crds, namespace)
    key_version = issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    signs = kms_counters.count("AsymmetricSign", name=key_version)
    keys = kms_counters.count("GetPublicKey", name=key_version)
    signet_operator.stop()
    started = time.monotonic()
    signet_operator.start()
    eventually(
        lambda: (
            "signet_workqueue_depth 0.0" in signet_operator.metrics()
            and f'name="c19",namespace="{namespace}"' in signet_operator.metrics()
        ),
        timeout=30,
        what="operator idle with every certificate observed",
    )
    idle_after = time.monotonic() - started
    time.sleep(2)
    assert kms_counters.count("AsymmetricSign", name=key_version) == signs, "a restart signed"
    assert _versions(crds, namespace) == before, "a restart must not write Secrets or status"
    # GetPublicKey once per key version per process life
    assert kms_counters.count("GetPublicKey", name=key_version) - keys == 1
    assert idle_after < 30

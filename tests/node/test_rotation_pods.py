"""A CA rotation seen from running pods on the real node: a server and a client doing a
handshake every 100 ms with the Secret and trust ConfigMap the kubelet mounts (and
refreshes) for them. With Signet's overlap not one handshake fails across a whole
rollover; with the overlap switched off (the old behaviour, a test-only flag) the same
rollover breaks handshakes, which is the outage the phases exist to prevent."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.kms.emulator import EmulatorServer
from signet_dev.controlplane import free_port
from signet_dev.node import LocalNode
from tests.kube import Kube, eventually
from tests.node.pods import example_objects, mtls_pod, run_pod, spiffe_id, status
from tests.operator.harness import OperatorProcess, secret_data, wait_condition
from tests.operator.test_rotation import _phase, _rotate

pytestmark = [pytest.mark.cluster, pytest.mark.node]

ROTATION = {"trustPropagation": "20s", "reissueQPS": 1, "retirementGrace": "20s"}
"""Four kubelet sync periods (the node's syncFrequency is 5s) for trust to reach pods."""


@dataclass
class Pair:
    namespace: str
    server_status: int
    client_status: int
    emulator: EmulatorServer
    keys: int = 0

    def next_key(self) -> str:
        self.keys += 1
        record = self.emulator.ensure_key(
            "rotation", f"{self.namespace}-{self.keys}", "EC_SIGN_P256_SHA256"
        )
        return str(record.name)


@pytest.fixture(scope="module")
def pair(
    crds: Kube, node: LocalNode, signet_operator: OperatorProcess, kms_emulator: EmulatorServer
) -> Iterator[Pair]:
    pair = Pair(f"rot-{uuid.uuid4().hex[:8]}", free_port(), free_port(), kms_emulator)
    objects = example_objects(pair.namespace)
    for obj in objects:
        if obj["kind"] == "Issuer":
            obj["spec"]["kms"]["cloudKMS"]["keyVersion"] = pair.next_key()
            obj["spec"]["rotation"] = ROTATION
    crds.apply({"apiVersion": "v1", "kind": "List", "items": objects})
    for name in ("frontend", "backend"):
        wait_condition(crds, pair.namespace, name, timeout=60)
    server = f"127.0.0.1:{free_port()}"
    run_pod(
        crds,
        node,
        mtls_pod(
            "backend", pair.namespace, "server",
            [f"--listen={server}", f"--allow={spiffe_id(pair.namespace, 'frontend')}",
             f"--status=127.0.0.1:{pair.server_status}"],
            secret="backend-svid", service_account="backend",
        ),
    )  # fmt: skip
    run_pod(
        crds,
        node,
        mtls_pod(
            "frontend", pair.namespace, "client",
            [f"--connect={server}", f"--expect={spiffe_id(pair.namespace, 'backend')}",
             "--interval=100ms", f"--status=127.0.0.1:{pair.client_status}"],
            secret="frontend-svid", service_account="frontend",
        ),
    )  # fmt: skip
    eventually(
        lambda: status(pair.client_status)["ok"] >= 3,
        timeout=60,
        what="first handshakes",
        errors=(OSError,),
    )
    yield pair
    crds.kubectl("delete", "namespace", pair.namespace, "--wait=false")


def _serial(pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


def _trust_digest(kube: Kube, namespace: str) -> str:
    """What the workload reports as trustSHA256 for the bundle published now."""
    pem = kube.core.read_namespaced_config_map("signet-issuer-mesh-ca", namespace).data["ca.crt"]
    digest = hashlib.sha256()
    for cert in x509.load_pem_x509_certificates(pem.encode()):
        digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.hexdigest()


def _counts(pair: Pair) -> tuple[dict[str, Any], dict[str, Any]]:
    return status(pair.server_status), status(pair.client_status)


def _pods_caught_up(kube: Kube, pair: Pair) -> None:
    """Both pods present the Secret's current certificate and verify with the bundle
    published now, and have done a few handshakes since."""
    trust = _trust_digest(kube, pair.namespace)
    for name, port in (("backend", pair.server_status), ("frontend", pair.client_status)):

        def current(name: str = name, port: int = port) -> bool:
            report = status(port)
            secret = secret_data(kube, pair.namespace, f"{name}-svid")
            return bool(
                report["ownSerials"]
                and report["ownSerials"][-1] == _serial(secret["tls.crt"])
                and report["trustSHA256"] == trust
            )

        try:
            eventually(current, timeout=90, what=f"{name} on the new identity and trust")
        except AssertionError as error:
            secret = secret_data(kube, pair.namespace, f"{name}-svid")
            raise AssertionError(
                f"{error}; report {status(port)}; Secret serial {_serial(secret['tls.crt'])}; "
                f"bundle {trust}"
            ) from None
    start = status(pair.client_status)["ok"]
    eventually(
        lambda: status(pair.client_status)["ok"] >= start + 5,
        timeout=30,
        what="handshakes after the rollover",
    )


def test_a_rollover_costs_no_handshake(crds: Kube, pair: Pair) -> None:
    server, client = _counts(pair)
    assert client["failed"] == 0, client
    ok_before, server_failed = client["ok"], server["failed"]
    trust_before = client["trustSHA256"]
    new_key = pair.next_key()
    _rotate(crds, pair.namespace, "mesh", new_key)
    _phase(crds, pair.namespace, "mesh", "Propagating")
    stable = _phase(crds, pair.namespace, "mesh", "Stable", timeout=240)
    assert stable["status"]["keyVersion"] == new_key
    _pods_caught_up(crds, pair)
    server, client = _counts(pair)
    assert client["failed"] == 0, f"{client['failed']} failed: {client['lastError']}"
    assert server["failed"] == server_failed, server["lastError"]
    assert client["ok"] > ok_before
    assert client["trustSHA256"] != trust_before


def test_the_same_rollover_without_overlap_breaks_handshakes(
    crds: Kube, pair: Pair, signet_operator: OperatorProcess
) -> None:
    """Keys switched at once: Secrets and bundles change together in the API, but each
    pod's volumes refresh at its own kubelet sync, so peers disagree for a while. Two
    pods can happen to refresh within one handshake interval of each other; up to four
    rollovers make that chance negligible."""
    signet_operator.stop()
    signet_operator.start(extra=["--unsafe-rotation-without-overlap"])
    try:
        broken = 0
        for _ in range(4):
            server_before, client_before = _counts(pair)
            _rotate(crds, pair.namespace, "mesh", pair.next_key())

            def failures(server_was: int = server_before["failed"],
                         client_was: int = client_before["failed"]) -> int:  # fmt: skip
                server, client = _counts(pair)
                return int(server["failed"] - server_was + client["failed"] - client_was)

            try:
                broken = eventually(failures, timeout=60, what="a failed handshake")
            except AssertionError:
                continue  # both pods refreshed within one handshake interval: try again
            break
        assert broken > 0, "no handshake failed without the overlap"
    finally:
        signet_operator.stop()
        signet_operator.start()

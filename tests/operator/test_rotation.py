"""CA rotation on the real apiserver: the new anchor is everywhere before the new key signs
a leaf, the old one stays until its last leaf is gone, re-issue is paced, every leaf costs
one signature, and a rollback or a restart in any phase carries on where it was."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.api import GROUP, VERSION
from signet.controller.trustbundles import bundle_name
from signet.kms.emulator import Counters
from signet.secretformat import layout
from tests.kube import Kube, eventually, wait_event
from tests.operator.harness import (
    OperatorProcess,
    certificate_manifest,
    issuer_manifest,
    secret_data,
    wait_condition,
    wait_issuer_ready,
)
from tests.operator.rotation_watch import Seen, Timeline, anchors
from tests.ops.cli import signet

pytestmark = pytest.mark.cluster

ALGORITHM = "EC_SIGN_P256_SHA256"


def _issuer(kube: Kube, namespace: str | None, name: str) -> dict[str, Any]:
    if namespace:
        obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "issuers", name
        )
    else:
        obj = kube.custom.get_cluster_custom_object(GROUP, VERSION, "clusterissuers", name)
    return obj


def _rotate(kube: Kube, namespace: str | None, name: str, key_version: str) -> None:
    kind = ["issuer", name, "-n", namespace] if namespace else ["clusterissuer", name]
    kube.kubectl(
        "patch", *kind, "--type=merge",
        "-p", f'{{"spec": {{"kms": {{"cloudKMS": {{"keyVersion": "{key_version}"}}}}}}}}',
    )  # fmt: skip


def _phase(kube: Kube, namespace: str | None, name: str, phase: str, timeout: float = 60) -> Any:
    def reached() -> dict[str, Any] | None:
        obj = _issuer(kube, namespace, name)
        status = obj.get("status") or {}
        current = (status.get("rotation") or {}).get("phase", "Stable")
        return obj if current == phase and status.get("keyVersion") else None

    return eventually(reached, timeout=timeout, interval=0.1, what=f"{name} {phase}")


def _leaf_checks(kube: Kube, namespace: str, name: str, ca_pem: str, key_version: str) -> None:
    """The Secret's key is its certificate's, signed by the CA of ``key_version``."""
    data = secret_data(kube, namespace, f"{name}-identity")
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    key = serialization.load_pem_private_key(data["tls.key"], None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == leaf.public_key().public_bytes(der, spki)
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    secret = kube.core.read_namespaced_secret(f"{name}-identity", namespace)
    assert secret.metadata.annotations[layout.KEY_VERSION] == key_version


@pytest.fixture
def third_namespace(kube: Kube) -> Iterator[str]:
    name = f"rot-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false")


def test_rollover_of_200_certificates_keeps_trust_ahead_of_every_leaf(
    crds: Kube,
    namespace: str,
    other_namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
    kms_counters: Counters,
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    name = f"rot-{namespace}"
    qps = 40.0
    crds.apply(
        issuer_manifest(
            name, old_key, ssh={"enabled": False},
            rotation={"trustPropagation": "3s", "reissueQPS": qps, "retirementGrace": "2s"},
        )
    )  # fmt: skip
    old_ca = wait_issuer_ready(crds, None, name)["status"]["caCertificate"]
    namespaces = (namespace, other_namespace)
    certs = [(ns, f"c{i}") for ns in namespaces for i in range(100)]
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                certificate_manifest(
                    cert, ns, name, issuerRef={"name": name, "kind": "ClusterIssuer"}
                )
                for ns, cert in certs
            ],
        }
    )
    for ns, cert in certs:
        wait_condition(crds, ns, cert, timeout=120)
    bundle = f"signet-clusterissuer-{name}-ca"
    old_anchor = anchors(old_ca)
    for ns in namespaces:
        assert (
            anchors(crds.core.read_namespaced_config_map(bundle, ns).data["ca.crt"]) == old_anchor
        )
    signs_before = kms_counters.count("AsymmetricSign", name=new_key)
    audit_mark = len(signet_operator.audit_all())

    timeline = Timeline(crds)
    timeline.start()
    _rotate(crds, None, name, new_key)
    propagating = _phase(crds, None, name, "Propagating")
    new_ca = propagating["status"]["rotation"]["to"]["caBundle"]
    assert propagating["status"]["keyVersion"] == old_key  # the old key signs meanwhile
    final = _phase(crds, None, name, "Stable", timeout=120)
    assert final["status"]["keyVersion"] == new_key
    assert "rotation" not in final["status"]
    for ns in namespaces:
        eventually(
            lambda ns=ns: (
                anchors(crds.core.read_namespaced_config_map(bundle, ns).data["ca.crt"])
                == anchors(new_ca)
            ),
            what=f"{ns} bundle holding only the new anchor",
        )
    events = [
        e for e in timeline.stop()
        if e.namespace in namespaces and (e.kind == "Secret" or e.name == bundle)
    ]  # fmt: skip

    # Order, as etcd wrote it.
    both = old_anchor | anchors(new_ca)

    def first(match: Callable[[Seen], bool]) -> int:
        return min(e.revision for e in events if match(e))

    def last(match: Callable[[Seen], bool]) -> int:
        return max(e.revision for e in events if match(e))

    first_new_leaf = first(lambda e: e.kind == "Secret" and e.key_version == new_key)
    for ns in namespaces:
        published = first(
            lambda e, ns=ns: e.kind == "ConfigMap" and e.namespace == ns and e.anchors == both
        )
        assert published < first_new_leaf, f"{ns}: a new leaf was written before its anchor"
    last_old_leaf_replaced = last(lambda e: e.kind == "Secret" and e.key_version == new_key)
    withdrawn = first(lambda e: e.kind == "ConfigMap" and e.anchors == anchors(new_ca))
    assert last_old_leaf_replaced < withdrawn, "the old anchor went before its last leaf"
    assert not [e for e in events if e.kind == "Secret" and e.key_version == old_key]

    # Every Secret: its key, its certificate, the new CA; one signature per leaf (+1 for
    # the new CA's bootstrap), each recorded.
    for ns, cert in certs:
        _leaf_checks(crds, ns, cert, new_ca, new_key)
    assert kms_counters.count("AsymmetricSign", name=new_key) - signs_before == len(certs) + 1
    records = signet_operator.audit_all()[audit_mark:]
    leaves = [
        r for r in records
        if r.get("kind") == "signet.dev/signature" and r.get("purpose") == "certificate"
    ]  # fmt: skip
    assert len(leaves) == len(certs) and {r["keyVersion"] for r in leaves} == {new_key}
    assert {r["trigger"] for r in leaves} == {"IncorrectIssuer"}

    # Paced: the re-issue spans at least (n - 1) / qps, no second holds much more than qps.
    times = sorted(datetime.datetime.fromisoformat(r["time"]) for r in leaves)
    assert (times[-1] - times[0]).total_seconds() >= (len(times) - 1) / qps * 0.95
    busiest = max(
        sum(1 for t in times if start <= t < start + datetime.timedelta(seconds=1))
        for start in times
    )
    assert busiest <= qps + 2, busiest

    # The rollover itself is on the audit trail, each phase once, in order.
    rotation = [r for r in records if r.get("kind") == "signet.dev/rotation"]
    assert [r["event"] for r in rotation] == [
        "RotationStarted", "RotationReissuing", "RotationRetiring", "RotationCompleted",
    ]  # fmt: skip
    assert {(r["fromKeyVersion"], r["toKeyVersion"]) for r in rotation[:3]} == {(old_key, new_key)}
    metrics = signet_operator.metrics()
    assert f'name="{name}",namespace="",phase="Stable"}} 1.0' in metrics


def _small_issuer(
    kube: Kube,
    namespace: str,
    key: str,
    count: int,
    pod_certificates: bool = False,
    **rotation: Any,
) -> list[str]:
    extra = {"podCertificates": {"enabled": True}} if pod_certificates else {}
    kube.apply(issuer_manifest("ca", key, namespace=namespace, rotation=rotation, **extra))
    wait_issuer_ready(kube, namespace, "ca")
    names = [f"c{i}" for i in range(count)]
    for name in names:
        kube.apply(certificate_manifest(name, namespace, "ca"))
    for name in names:
        wait_condition(kube, namespace, name, timeout=60)
    return names


def _key_versions(kube: Kube, namespace: str, names: list[str]) -> set[str]:
    return {
        kube.core.read_namespaced_secret(f"{n}-identity", namespace).metadata.annotations[
            layout.KEY_VERSION
        ]
        for n in names
    }


def test_rollback_before_the_switch_signs_nothing_with_the_new_key(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
    kms_counters: Counters,
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    names = _small_issuer(
        crds, namespace, old_key, 3, trustPropagation="10m", pod_certificates=True
    )
    _rotate(crds, namespace, "ca", new_key)
    propagating = _phase(crds, namespace, "ca", "Propagating")["status"]
    both = anchors(propagating["caBundle"]) | anchors(propagating["rotation"]["to"]["caBundle"])
    # The signer's ClusterTrustBundle (pods with podCertificate volumes) holds both too.
    bundle_id = bundle_name(("Issuer", namespace, "ca"))

    def trust_bundle() -> frozenset[str]:
        obj = crds.custom.get_cluster_custom_object(
            "certificates.k8s.io", "v1", "clustertrustbundles", bundle_id
        )
        return anchors(obj["spec"]["trustBundle"])

    eventually(lambda: trust_bundle() == both, what="both anchors in the ClusterTrustBundle")
    _rotate(crds, namespace, "ca", old_key)
    stable = _phase(crds, namespace, "ca", "Stable")
    assert stable["status"]["keyVersion"] == old_key
    wait_event(crds, namespace, "ca", "RotationRolledBack")
    bundle = crds.core.read_namespaced_config_map("signet-issuer-ca-ca", namespace).data
    eventually(
        lambda: (
            anchors(
                crds.core.read_namespaced_config_map("signet-issuer-ca-ca", namespace).data[
                    "ca.crt"
                ]
            )
            == anchors(stable["status"]["caCertificate"])
        ),
        what="the unused anchor withdrawn",
    )
    assert bundle is not None
    eventually(
        lambda: trust_bundle() == anchors(stable["status"]["caCertificate"]),
        what="the unused anchor withdrawn from the ClusterTrustBundle",
    )
    assert _key_versions(crds, namespace, names) == {old_key}
    assert kms_counters.count("AsymmetricSign", name=new_key) == 1  # its CA bootstrap only


def test_rollback_while_reissuing_returns_every_leaf_to_the_old_ca(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    names = _small_issuer(
        crds, namespace, old_key, 8, trustPropagation="2s", reissueQPS=1, retirementGrace="2s"
    )
    old_ca = wait_issuer_ready(crds, namespace, "ca")["status"]["caCertificate"]
    _rotate(crds, namespace, "ca", new_key)
    eventually(
        lambda: new_key in _key_versions(crds, namespace, names),
        timeout=60,
        what="a first leaf of the new key",
    )
    _rotate(crds, namespace, "ca", old_key)
    wait_event(crds, namespace, "ca", "RotationRolledBack")
    stable = _phase(crds, namespace, "ca", "Stable", timeout=90)
    assert stable["status"]["keyVersion"] == old_key
    assert stable["status"]["caCertificate"] == old_ca  # the old CA came back, not a new one
    assert _key_versions(crds, namespace, names) == {old_key}
    for name in names:
        _leaf_checks(crds, namespace, name, old_ca, old_key)


def test_a_restart_in_every_phase_resumes_the_rollover(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
    kms_counters: Counters,
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    names = _small_issuer(
        crds, namespace, old_key, 6, trustPropagation="6s", reissueQPS=0.5, retirementGrace="6s"
    )
    _rotate(crds, namespace, "ca", new_key)
    started = _phase(crds, namespace, "ca", "Propagating")["status"]["rotation"]
    for phase in ("Propagating", "Reissuing", "Retiring"):
        _phase(crds, namespace, "ca", phase)
        signet_operator.stop()
        signet_operator.start()
        resumed = _issuer(crds, namespace, "ca")["status"]
        assert resumed.get("rotation", {}).get("startedAt") in (started["startedAt"], None)
    final = _phase(crds, namespace, "ca", "Stable", timeout=90)
    assert final["status"]["keyVersion"] == new_key
    assert _key_versions(crds, namespace, names) == {new_key}
    # One bootstrap for the new CA (the restarts reused it from status) and one per leaf.
    assert kms_counters.count("AsymmetricSign", name=new_key) == len(names) + 1
    for reason in ("RotationStarted", "RotationReissuing", "RotationRetiring", "RotationCompleted"):
        wait_event(crds, namespace, "ca", reason)


def test_signet_status_shows_the_phase(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    _small_issuer(crds, namespace, old_key, 1, trustPropagation="10m")
    _rotate(crds, namespace, "ca", new_key)
    _phase(crds, namespace, "ca", "Propagating")
    result = signet("status", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert result.code == 0, result.err
    row = next(line.split() for line in result.out.splitlines() if line.startswith(namespace))
    assert row[1:3] == ["Issuer", "ca"] and row[-1] == "Propagating"
    printed = crds.kubectl("get", "issuer", "ca", "-n", namespace).stdout
    assert "ROTATION" in printed and "Propagating" in printed

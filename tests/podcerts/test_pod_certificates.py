"""Signet answers Kubernetes' own PodCertificateRequests on the real apiserver.

Requests are made as the kubelet would make them (impersonating the node, for a pod bound
to it that mounts the signer), signed through the KMS emulator, and judged by the
apiserver's own status validation, OpenSSL and the audit trail.
"""

from __future__ import annotations

import collections
import datetime
import functools
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from prometheus_client.parser import text_string_to_metric_families

from signet.api import GROUP, VERSION
from signet.controller.trustbundles import ISSUER_LABEL, bundle_name
from signet.kms.algorithms import ALGORITHMS
from signet.kms.emulator import Counters, Faults
from tests.kms_fixtures import KeyFactory
from tests.kube import Kube, eventually, wait_event
from tests.operator.harness import (
    OperatorProcess,
    issuer_manifest,
    signatures,
    wait_issuer_ready,
)
from tests.ops.cli import signet
from tests.podcerts.requests import (
    KEY_TYPES,
    answer,
    create_pod,
    create_request,
    generate_key,
    get_request,
    wait_answered,
)

pytestmark = pytest.mark.cluster

OPTED_IN = {"podCertificates": {"enabled": True}}


def _request_metrics(operator: OperatorProcess) -> collections.Counter[tuple[str, ...]]:
    """The operator's request counters: (answer, reason) -> count, plus ("seconds",
    answer) -> observations, for PodCertificateRequests."""
    found: collections.Counter[tuple[str, ...]] = collections.Counter()
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.labels.get("kind") != "PodCertificateRequest":
                continue
            if sample.name == "signet_certificate_requests_total":
                found[sample.labels["answer"], sample.labels["reason"]] += int(sample.value)
            elif sample.name == "signet_certificate_request_duration_seconds_count":
                found["seconds", sample.labels["answer"]] += int(sample.value)
            elif sample.name == "signet_certificate_requests_waiting":
                found["waiting",] += int(sample.value)
    return found


def _request_row(output: str, name: str) -> list[str]:
    (row,) = [line.split() for line in output.splitlines() if f"pcr/{name}" in line.split()]
    return row


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _pod_audit(operator: OperatorProcess, kind: str, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in operator.audit_all()
        if r.get("kind") == kind and (r.get("podCertificateRequest") or {}).get("name") == name
    ]


def _openssl_verify(folder: Path, chain_pem: str, ca_pem: str) -> None:
    (folder / "chain.pem").write_text(chain_pem)
    (folder / "ca.pem").write_text(ca_pem)
    for purpose in ("sslclient", "sslserver"):
        result = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose,
             "-CAfile", str(folder / "ca.pem"), str(folder / "chain.pem")],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_key_type_is_answered_once_and_a_restart_signs_nothing_again(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    tmp_path: Path,
) -> None:
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    crds.apply(
        issuer_manifest("ca", key_version, namespace=namespace, trustDomain="pods.test", **OPTED_IN)
    )
    issuer = wait_issuer_ready(crds, namespace, "ca")
    ca_pem = issuer["status"]["caCertificate"]
    signer = f"issuers.signet.dev/{namespace}.ca"
    pod = create_pod(crds, namespace, node["metadata"]["name"], "web", [signer])
    before = signatures(kms_counters, issuer)

    # The issuer's trust anchor is published as a ClusterTrustBundle linked to its signer.
    bundle_id = bundle_name(("Issuer", namespace, "ca"))
    bundle = eventually(
        lambda: crds.custom.get_cluster_custom_object(
            "certificates.k8s.io", "v1", "clustertrustbundles", bundle_id
        ),
        what=f"ClusterTrustBundle {bundle_id}",
    )
    assert bundle["spec"] == {"signerName": signer, "trustBundle": ca_pem}
    assert bundle["metadata"]["labels"][ISSUER_LABEL] == "ca"

    keys = {key_type: generate_key(key_type) for key_type in KEY_TYPES}
    names = {
        key_type: create_request(
            crds,
            pod,
            node,
            signer,
            key,
            max_expiration_seconds=3600 if key_type == "ECDSAP384" else None,
        )
        for key_type, key in keys.items()
    }
    # A pod's node is the only node that may ask for it.
    refused = create_request(crds, pod, node, signer, keys["ED25519"], as_node="n2", check=False)
    assert "Forbidden" in refused or "forbidden" in refused, refused

    issued = 0
    for key_type, name in names.items():
        body = wait_answered(crds, namespace, name)
        condition = answer(body)
        assert condition is not None
        issued += 1
        assert (condition["type"], condition["status"], condition["reason"]) == (
            "Issued", "True", "Issued"
        ), condition  # fmt: skip
        status = body["status"]
        chain = x509.load_pem_x509_certificates(status["certificateChain"].encode())
        leaf = chain[0]
        _openssl_verify(tmp_path, status["certificateChain"], ca_pem)
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        assert leaf.public_key().public_bytes(der, fmt) == keys[key_type].public_key().public_bytes(
            der, fmt
        )
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://pods.test/ns/{namespace}/sa/web"
        ]
        ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        not_before, not_after = _time(status["notBefore"]), _time(status["notAfter"])
        assert (not_before, not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        lifetime = not_after - not_before
        wanted = datetime.timedelta(hours=1 if key_type == "ECDSAP384" else 24)
        assert lifetime == wanted, (key_type, lifetime)
        refresh = _time(status["beginRefreshAt"])
        margin = datetime.timedelta(minutes=10)
        assert not_before + margin <= refresh <= not_after - margin
        assert abs((refresh - not_before) - lifetime * 2 / 3) <= lifetime * 0.06
        # One signature, audited with who asked, and one delivery record pointing at it.
        (record,) = _pod_audit(signet_operator, "signet.dev/signature", name)
        assert record["purpose"] == "pod-certificate"
        assert record["pod"]["name"] == pod["metadata"]["name"]
        assert record["serviceAccount"]["name"] == "web"
        assert record["node"]["name"] == node["metadata"]["name"]
        assert record["keyType"] == key_type
        assert record["serialNumber"] == format(leaf.serial_number, "x")
        # The status can be seen before the delivery record is written.
        (delivery,) = eventually(
            lambda: _pod_audit(signet_operator, "signet.dev/delivery", name),  # noqa: B023
            what=f"delivery record of {name}",
        )
        assert delivery["outcome"] == "written"
        assert delivery["serialNumber"] == record["serialNumber"]
    assert signatures(kms_counters, issuer) - before == issued == len(KEY_TYPES)

    # A restart looks at every request again and signs nothing: answered is answered.
    signet_operator.stop()
    signet_operator.start()
    late = create_request(crds, pod, node, signer, keys["ECDSAP256"])
    assert answer(wait_answered(crds, namespace, late))["type"] == "Issued"  # type: ignore[index]
    assert signatures(kms_counters, issuer) - before == issued + 1


@pytest.fixture
def cluster_issuer(
    crds: Kube, signet_operator: OperatorProcess, kms_key_factory: KeyFactory
) -> Iterator[str]:
    name = f"pods-{uuid.uuid4().hex[:6]}"
    crds.apply(
        issuer_manifest(
            name,
            kms_key_factory("EC_SIGN_P256_SHA256"),
            namespaceSelector={"matchLabels": {"signet.dev/pods": "yes"}},
            **OPTED_IN,
        )
    )
    wait_issuer_ready(crds, None, name)
    yield name
    crds.custom.delete_cluster_custom_object(GROUP, VERSION, "clusterissuers", name)


def test_refusals_are_denied_with_the_rule_that_refused(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    make_issuer: Callable[..., dict[str, Any]],
    cluster_issuer: str,
    kms_counters: Counters,
    signet_operator: OperatorProcess,
) -> None:
    counted = _request_metrics(signet_operator)
    picky = make_issuer(
        "picky", podCertificates={"enabled": True, "allowedKeyTypes": ["ECDSAP256"]}
    )
    plain = make_issuer("plain")
    before = {i["metadata"]["name"]: signatures(kms_counters, i) for i in (picky, plain)}
    cases = {
        f"issuers.signet.dev/{namespace}": ("UnknownSigner", "names no issuer"),
        f"issuers.signet.dev/{namespace}.missing": ("UnknownSigner", "does not exist"),
        f"issuers.signet.dev/{namespace}.plain": (
            "PodCertificatesNotEnabled",
            "spec.podCertificates.enabled",
        ),
        "issuers.signet.dev/kube-system.picky": ("NamespaceNotAllowed", "kube-system"),
        f"clusterissuers.signet.dev/{cluster_issuer}": (
            "NamespaceNotAllowed",
            "namespaceSelector",
        ),
    }
    signers = [*cases, f"issuers.signet.dev/{namespace}.picky", "example.com/other"]
    pod = create_pod(crds, namespace, node["metadata"]["name"], "app", signers)
    ec_key, rsa_key = generate_key("ECDSAP256"), generate_key("RSA3072")
    foreign = create_request(crds, pod, node, "example.com/other", ec_key)
    names = {signer: create_request(crds, pod, node, signer, ec_key) for signer in cases}
    picky_signer = f"issuers.signet.dev/{namespace}.picky"
    names["rsa"] = create_request(crds, pod, node, picky_signer, rsa_key)
    names["annotated"] = create_request(
        crds, pod, node, picky_signer, ec_key, user_annotations={"example.com/dns": "a.b"}
    )
    expected = {
        **cases,
        "rsa": ("UnsupportedKeyType", "allowedKeyTypes ['ECDSAP256']"),
        "annotated": ("InvalidUnverifiedUserAnnotations", "'example.com/dns'"),
    }
    for case, name in names.items():
        condition = answer(wait_answered(crds, namespace, name))
        assert condition is not None
        reason, text = expected[case]
        assert (condition["type"], condition["reason"]) == ("Denied", reason), (case, condition)
        assert text in condition["message"], (case, condition)
    wait_event(crds, namespace, names["rsa"], "UnsupportedKeyType", type="Warning")
    # Each answer is counted by its reason, timed, and no longer waiting.
    denied = collections.Counter(("Denied", reason) for reason, _ in expected.values())
    wanted = counted + denied + collections.Counter({("seconds", "Denied"): len(names)})
    eventually(
        lambda: all(_request_metrics(signet_operator)[k] >= n for k, n in wanted.items()),
        what=f"request metrics {dict(wanted)}",
    )
    assert _request_metrics(signet_operator)["waiting",] == 0
    for issuer in (picky, plain):
        assert signatures(kms_counters, issuer) == before[issuer["metadata"]["name"]]
    # A request for another signer is none of Signet's business.
    assert answer(get_request(crds, namespace, foreign)) is None


def test_a_kms_outage_is_waited_out_and_costs_one_signature(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    make_issuer: Callable[..., dict[str, Any]],
    kms_counters: Counters,
    kms_faults: Faults,
) -> None:
    issuer = make_issuer("ca", **OPTED_IN)
    key_version = issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    signer = f"issuers.signet.dev/{namespace}.ca"
    pod = create_pod(crds, namespace, node["metadata"]["name"], "web", [signer])
    signed_before = kms_counters.count("AsymmetricSign", key_version, "OK")
    kms_faults.error_code = grpc.StatusCode.UNAVAILABLE
    kms_faults.error_rate = 1.0
    name = create_request(crds, pod, node, signer, generate_key("ECDSAP256"))
    # Attempts keep coming on the backoff schedule while KMS is down; the request waits.
    eventually(
        lambda: kms_counters.count("AsymmetricSign", key_version, "UNAVAILABLE") >= 2,
        timeout=30,
        what="failed signing attempts",
    )
    assert answer(get_request(crds, namespace, name)) is None
    # `signet status` shows the waiting request among the problems.
    waiting = signet("status", "-n", namespace, kubeconfig=crds.kubeconfig)
    row = _request_row(waiting.out, name)
    pod_name = pod["metadata"]["name"]
    assert row == [namespace, f"pcr/{name}", signer, f"pod/{pod_name}", "Pending"], waiting.out
    assert f"PodCertificateRequest {namespace}/{name}: not answered yet" in waiting.out
    kms_faults.reset()
    condition = answer(wait_answered(crds, namespace, name, timeout=60))
    assert condition is not None and condition["type"] == "Issued", condition
    body = get_request(crds, namespace, name)
    settled = signet("status", "-n", namespace, kubeconfig=crds.kubeconfig)
    assert "Not ready" not in settled.out, settled.out
    assert _request_row(settled.out, name)[4:] == ["Issued", "Issued", body["status"]["notAfter"]]
    assert kms_counters.count("AsymmetricSign", key_version, "OK") - signed_before == 1


def test_dns_names_come_only_from_the_documented_annotation_and_the_policy(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    make_issuer: Callable[..., dict[str, Any]],
    kms_counters: Counters,
    signet_operator: OperatorProcess,
) -> None:
    issuer = make_issuer(
        "dns", podCertificates={"enabled": True, "dnsNamesFromUserAnnotations": True}
    )
    signer = f"issuers.signet.dev/{namespace}.dns"
    pod = create_pod(crds, namespace, node["metadata"]["name"], "web", [signer])
    key = generate_key("ECDSAP256")
    before = signatures(kms_counters, issuer)
    asked = f"web.{namespace}.svc, api.{namespace}.svc"
    granted = create_request(
        crds, pod, node, signer, key, user_annotations={"signet.dev/dns-names": asked}
    )
    foreign = create_request(
        crds, pod, node, signer, key, user_annotations={"signet.dev/dns-names": "db.bank.svc"}
    )

    body = wait_answered(crds, namespace, granted)
    assert answer(body)["type"] == "Issued", answer(body)  # type: ignore[index]
    leaf = x509.load_pem_x509_certificates(body["status"]["certificateChain"].encode())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        f"web.{namespace}.svc",
        f"api.{namespace}.svc",
    ]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://cluster.local/ns/{namespace}/sa/web"
    ]
    (record,) = _pod_audit(signet_operator, "signet.dev/signature", granted)
    assert record["dnsNames"] == [f"web.{namespace}.svc", f"api.{namespace}.svc"]

    refused = answer(wait_answered(crds, namespace, foreign))
    assert refused is not None
    assert (refused["type"], refused["reason"]) == ("Denied", "DNSNameNotAllowed"), refused
    assert "'db.bank.svc'" in refused["message"] and "policy.allowedDNSNames" in refused["message"]
    assert signatures(kms_counters, issuer) - before == 1
    # Deleting the issuer withdraws its ClusterTrustBundle (an Issuer cannot own one).
    bundle_id = bundle_name(("Issuer", namespace, "dns"))
    cluster = crds.custom
    eventually(
        lambda: cluster.get_cluster_custom_object(
            "certificates.k8s.io", "v1", "clustertrustbundles", bundle_id
        ),
        what=f"ClusterTrustBundle {bundle_id}",
    )
    cluster.delete_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", "dns")
    eventually(
        lambda: (
            not any(
                b["metadata"]["name"] == bundle_id
                for b in cluster.list_cluster_custom_object(
                    "certificates.k8s.io", "v1", "clustertrustbundles"
                )["items"]
            )
        ),
        what=f"ClusterTrustBundle {bundle_id} withdrawn",
    )


@functools.cache
def _requester_key(key_type: str) -> Any:
    """One key per kubelet key type for the whole module: RSA generation is slow."""
    return generate_key(key_type)


@pytest.mark.parametrize(
    "algorithm", [a for a in ALGORITHMS if a != "EC_SIGN_P256_SHA256"]
)  # P-256 above
def test_every_issuer_key_algorithm_signs_every_key_type(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    make_issuer: Callable[..., dict[str, Any]],
    kms_counters: Counters,
    algorithm: str,
    tmp_path: Path,
) -> None:
    # OpenSSH has no RSA-PSS signatures: such a CA issues X.509 only.
    ssh = {"enabled": not algorithm.startswith("RSA_SIGN_PSS")}
    issuer = make_issuer("ca", algorithm=algorithm, ssh=ssh, **OPTED_IN)
    ca_pem = issuer["status"]["caCertificate"]
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    signer = f"issuers.signet.dev/{namespace}.ca"
    pod = create_pod(crds, namespace, node["metadata"]["name"], "web", [signer])
    before = signatures(kms_counters, issuer)
    names = {t: create_request(crds, pod, node, signer, _requester_key(t)) for t in KEY_TYPES}
    for key_type, name in names.items():
        body = wait_answered(crds, namespace, name)
        assert (answer(body) or {}).get("type") == "Issued", (key_type, answer(body))
        leaf = x509.load_pem_x509_certificates(body["status"]["certificateChain"].encode())[0]
        assert leaf.signature_algorithm_oid == ca.signature_algorithm_oid, key_type
        _openssl_verify(tmp_path, body["status"]["certificateChain"], ca_pem)
    assert signatures(kms_counters, issuer) - before == len(KEY_TYPES)


def test_a_v1beta1_kubelet_request_is_signed_for_its_pkix_public_key(
    crds: Kube,
    namespace: str,
    node: dict[str, Any],
    make_issuer: Callable[..., dict[str, Any]],
    kms_counters: Counters,
) -> None:
    """Kubelets older than v1.36 send the key as v1beta1's pkixPublicKey (v1 has no field
    for it); the test bed serves v1beta1, as a cluster with such nodes would."""
    issuer = make_issuer("ca", **OPTED_IN)
    signer = f"issuers.signet.dev/{namespace}.ca"
    pod = create_pod(crds, namespace, node["metadata"]["name"], "web", [signer])
    before = signatures(kms_counters, issuer)
    keys = {t: _requester_key(t) for t in ("ECDSAP384", "RSA3072", "ED25519")}
    names = {t: create_request(crds, pod, node, signer, k, v1beta1=True) for t, k in keys.items()}
    for key_type, name in names.items():
        body = wait_answered(crds, namespace, name)
        assert (answer(body) or {}).get("type") == "Issued", (key_type, answer(body))
        leaf = x509.load_pem_x509_certificates(body["status"]["certificateChain"].encode())[0]
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert leaf.public_key().public_bytes(serialization.Encoding.DER, spki) == keys[
            key_type
        ].public_key().public_bytes(serialization.Encoding.DER, spki)
    assert signatures(kms_counters, issuer) - before == len(keys)


def test_a_bundle_of_an_issuer_deleted_while_no_operator_ran_is_withdrawn_at_start(
    crds: Kube,
    namespace: str,
    make_issuer: Callable[..., dict[str, Any]],
    signet_operator: OperatorProcess,
) -> None:
    make_issuer("gone", **OPTED_IN)
    make_issuer("kept", **OPTED_IN)
    cluster = crds.custom

    def bundles() -> set[str]:
        items = cluster.list_cluster_custom_object(
            "certificates.k8s.io", "v1", "clustertrustbundles"
        )["items"]
        return {b["metadata"]["name"] for b in items}

    gone, kept = (bundle_name(("Issuer", namespace, n)) for n in ("gone", "kept"))
    eventually(lambda: {gone, kept} <= bundles(), what="both issuers' bundles")
    signet_operator.stop()
    try:
        cluster.delete_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", "gone")
    finally:
        signet_operator.start()
    eventually(lambda: gone not in bundles(), what=f"ClusterTrustBundle {gone} withdrawn")
    assert kept in bundles()

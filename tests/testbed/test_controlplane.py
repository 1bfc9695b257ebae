"""The test bed itself: a real apiserver with RBAC, CRDs with schema + CEL validation, watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from signet.api import GROUP, VERSION
from signet_dev import LocalControlPlane
from tests.kube import ROOT, Kube, eventually
from tests.operator.harness import certificate_manifest

pytestmark = pytest.mark.cluster

GROUP, VERSION = GROUP, VERSION


def _issuer(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer",
        "metadata": {"name": name},
        "spec": {
            "kms": {
                "cloudKMS": {
                    "keyVersion": "projects/signet-dev/locations/global/keyRings/r"
                    "/cryptoKeys/k/cryptoKeyVersions/1"
                }
            },
            "x509": {"selfSigned": {}},
        },
    }


def test_version_and_rbac_denies_unbound_service_account(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    version = json.loads(kube.kubectl("get", "--raw", "/version").stdout)
    assert version["major"] == "1"
    kube.core.create_namespaced_service_account(
        namespace, kubernetes.client.V1ServiceAccount(metadata={"name": "nobody"})
    )
    sa_config = kube.service_account_kubeconfig(namespace, "nobody", tmp_path)
    whoami = kube.kubectl("auth", "whoami", "-o", "json", kubeconfig_path=sa_config)
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:nobody"
    )
    denied = kube.kubectl(
        "auth", "can-i", "list", "secrets", "-n", namespace, kubeconfig_path=sa_config, check=False
    )
    assert denied.stdout.strip() == "no"
    assert kube.kubectl("auth", "can-i", "list", "secrets", "-n", namespace).stdout.strip() == "yes"


def test_custom_object_round_trip_and_watch(crds: Kube, namespace: str) -> None:
    crds.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", _issuer("a"))
    got = crds.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "issuers", "a")
    assert got["spec"]["trustDomain"] == "cluster.local", "schema default applied"
    assert got["spec"]["x509"]["selfSigned"]["duration"] == "87600h"

    seen: list[tuple[str, str]] = []
    watching = threading.Event()

    def watch() -> None:
        stream = kubernetes.watch.Watch()
        watching.set()
        for event in stream.stream(
            crds.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "issuers",
            # From the created version: the patch below may land before the watch is up.
            resource_version=got["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ):
            labels = event["object"]["metadata"].get("labels") or {}
            seen.append((event["type"], labels.get("step", "")))
            if labels.get("step") == "2":
                stream.stop()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    watching.wait()
    crds.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "issuers", "a", {"metadata": {"labels": {"step": "2"}}}
    )
    thread.join(25)
    assert ("MODIFIED", "2") in seen


def _as_ssh(certificate: dict[str, Any], **spec: Any) -> None:
    """An SSH Certificate carrying X.509-only fields (one merged CEL rule refuses them)."""
    certificate["spec"].pop("x509")
    certificate["spec"].update(ssh={"type": "user", "principals": ["alice"]}, **spec)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["spec"].pop("x509"), "exactly one of spec.x509 or spec.ssh must be set"),
        (lambda c: c["spec"].update(duration="0s"), "duration must be between 1m and 87600h"),
        (lambda c: c["spec"].update(duration="876600h"), "duration must be between 1m and 87600h"),
        (lambda c: c["spec"].update(duration="tomorrow"), "spec.duration in body should match"),
        (lambda c: c["spec"]["x509"].update(ipAddresses=["300.1.1.1"]), "must be an IPv4 or IPv6"),
        (
            lambda c: c["spec"].update(privateKey={"algorithm": "RSA", "size": 1024}),
            "RSA keys must be 2048",
        ),
        (
            lambda c: c["spec"].update(privateKey={"algorithm": "ECDSA", "size": 2048}),
            "ECDSA keys must be 256 (P-256), 384 (P-384) or 521 (P-521) bits",
        ),
        (
            lambda c: c["spec"].update(privateKey={"algorithm": "Ed25519", "size": 256}),
            "Ed25519 keys have no size",
        ),
        (
            lambda c: _as_ssh(c, keystores={"pkcs12": {"create": False}}),
            "keystores and additionalOutputFormats are for X.509 certificates only",
        ),
        (
            lambda c: _as_ssh(c, privateKey={"encoding": "PKCS8"}),
            "keystores and additionalOutputFormats are for X.509 certificates only",
        ),
        (
            lambda c: _as_ssh(c, additionalOutputFormats=[{"type": "DER"}]),
            "keystores and additionalOutputFormats are for X.509 certificates only",
        ),
        (lambda c: c["spec"]["x509"].update(dnsNames=[]), "needs at least one of commonName"),
        (lambda c: c["spec"]["x509"].update(isCA=True), 'unknown field "spec.x509.isCA"'),
        (
            lambda c: c["spec"].update(secretName="Not_A_Name"),
            "spec.secretName in body should match",
        ),
        (
            lambda c: c["spec"].update(secretTemplate={"annotations": {"signet.dev/x": "y"}}),
            "signet.dev/ annotations are reserved for Signet",
        ),
    ],
    ids=[
        "neither-x509-nor-ssh",
        "zero-duration",
        "century",
        "bad-duration",
        "bad-ip",
        "rsa-1024",
        "ecdsa-2048",
        "ed25519-with-size",
        "ssh-with-keystores",
        "ssh-with-key-encoding",
        "ssh-with-output-formats",
        "x509-no-names",
        "is-ca",
        "bad-secret-name",
        "reserved-annotation",
    ],
)
def test_schema_rejects_invalid_certificate_with_clear_message(
    crds: Kube, namespace: str, mutate: Any, message: str
) -> None:
    certificate = certificate_manifest(
        "bad", namespace, "a", secretName="bad-tls", x509={"dnsNames": ["web.example.svc"]}
    )
    mutate(certificate)
    result = crds.apply(certificate, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "bad" not in crds.kubectl("get", "certificates", "-n", namespace, "-o", "name").stdout


@pytest.mark.parametrize(
    "key",
    [
        {"algorithm": "RSA", "size": 2048},
        {"algorithm": "RSA", "size": 4096},
        {"algorithm": "RSA"},
        {"algorithm": "ECDSA", "size": 256},
        {"algorithm": "ECDSA", "size": 521},
        {"algorithm": "ECDSA"},
        {"algorithm": "Ed25519"},
        {},
    ],
    ids=["rsa-2048", "rsa-4096", "rsa", "ecdsa-256", "ecdsa-521", "ecdsa", "ed25519", "default"],
)
def test_schema_accepts_every_supported_key(
    crds: Kube, namespace: str, key: dict[str, Any]
) -> None:
    """The privateKey sizes are checked by one merged rule: each supported pair passes it."""
    certificate = certificate_manifest(
        "key", namespace, "a", secretName="key-tls", x509={"dnsNames": ["web.example.svc"]}
    )
    certificate["spec"]["privateKey"] = key
    crds.apply(certificate)
    crds.kubectl("delete", "certificate", "key", "-n", namespace)


def test_valid_certificate_accepted_with_defaults(crds: Kube, namespace: str) -> None:
    crds.apply(
        certificate_manifest(
            "good", namespace, "a", secretName="good-tls", x509={"dnsNames": ["a.b.svc"]}
        )
    )
    got = crds.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificates", "good"
    )
    assert got["spec"]["duration"] == "24h"
    assert got["spec"]["privateKey"] == {"algorithm": "ECDSA", "rotationPolicy": "Always"}
    assert got["spec"]["issuerRef"]["kind"] == "Issuer"


def test_issuer_crds_match_their_generator() -> None:
    sys.path.insert(0, str(ROOT / "hack"))
    try:
        import gen_issuer_crds
    finally:
        sys.path.pop(0)
    for path, text in gen_issuer_crds.rendered_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run python hack/gen_issuer_crds.py"


def test_cluster_up_cli_starts_and_cleans_up() -> None:
    """`python -m signet_dev cluster up` prints an export line, serves, and leaves nothing
    behind on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "signet_dev", "cluster", "up", "--no-controller-manager"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("export KUBECONFIG="), line
        config = Path(line.removeprefix("export KUBECONFIG="))
        workdir = config.parent
        kube = Kube(config, plane=None)
        assert json.loads(kube.kubectl("get", "--raw", "/version").stdout)["major"] == "1"
    finally:
        process.send_signal(2)
        process.wait(30)
    assert process.returncode == 0
    eventually(lambda: not workdir.exists(), timeout=10, what="temp folder removed")
    leftovers = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True
    ).stdout.strip()
    assert leftovers == "", f"processes left behind: {leftovers}"


def test_stop_after_failed_start_leaves_nothing(tmp_path: Path) -> None:
    plane = LocalControlPlane(
        with_controller_manager=False,
        extra_apiserver_args=["--authorization-mode=NoSuchMode"],
    )
    started = time.monotonic()
    with pytest.raises(Exception, match="kube-apiserver exited"):
        plane.start(timeout=30)
    assert time.monotonic() - started < 30
    assert plane.workdir is not None and not plane.workdir.exists()

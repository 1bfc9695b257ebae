"""The chart's RBAC is enough to run Signet: `signet run` with the installed Deployment's own
command line and environment, authenticated as the chart's ServiceAccount (TokenRequest
token), issues a Certificate through an Issuer whose key is in the KMS emulator.

The pod cannot run here (no kubelet), so the operator runs as a subprocess; everything it
does against the API goes through the ServiceAccount's RBAC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from signet.api import GROUP, VERSION
from signet.controller.trust import configmap_name
from signet.controller.trustbundles import bundle_name
from signet.kms.emulator import EmulatorServer
from signet_dev.controlplane import free_port
from tests.chart.helm import CHART, helm
from tests.kms_fixtures import KeyFactory
from tests.kube import Kube, eventually
from tests.podcerts import csrs
from tests.podcerts.requests import (
    answer,
    create_node,
    create_pod,
    create_request,
    generate_key,
    wait_answered,
)

pytestmark = pytest.mark.cluster

GROUP, VERSION = GROUP, VERSION


def _ready(kube: Kube, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    body: dict[str, Any] = cast(
        dict[str, Any],
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name),
    )
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready" and condition["status"] == "True":
            return body
    return None


def wait_ready(kube: Kube, plural: str, namespace: str, name: str, log: Path) -> None:
    """Wait for Ready=True; on timeout, fail with the object's status and the operator log."""
    try:
        eventually(lambda: _ready(kube, plural, namespace, name), timeout=60)
    except AssertionError as error:
        body: Any = kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
        status = body.get("status")
        raise AssertionError(
            f"{plural}/{name} not Ready: {status}\n{log.read_text()[-3000:]}"
        ) from error


@pytest.fixture
def installed(crds: Kube, namespace: str, release_name: str) -> Iterator[str]:
    """The chart installed with default values (cluster-wide); yields its fullname."""
    helm(
        "install", release_name, str(CHART), "-n", namespace, "--take-ownership",
        kubeconfig=crds.kubeconfig,
    )  # fmt: skip
    yield f"{release_name}-signet"
    helm("uninstall", release_name, "-n", namespace, kubeconfig=crds.kubeconfig, check=False)


def test_signet_run_as_the_chart_service_account_issues_a_certificate(
    kube: Kube,
    installed: str,
    namespace: str,
    other_namespace: str,
    kms_emulator: EmulatorServer,
    kms_key_factory: KeyFactory,
    tmp_path: Path,
) -> None:
    deployment = json.loads(
        kube.kubectl("get", "deployment", installed, "-n", namespace, "-o", "json").stdout
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["signet", "run"]
    token = kube.service_account_kubeconfig(namespace, installed, tmp_path)
    health_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "SIGNET_KMS_EMULATOR": kms_emulator.address}
    for item in container["env"]:
        if item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        elif "value" in item:
            env[item["name"]] = item["value"]
    assert env["SIGNET_NAMESPACE"] == namespace
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never mistake this for in-cluster
    log = tmp_path / "operator.log"
    command = [
        sys.executable, "-m", "signet.cli", "run", *container["args"],
        f"--kubeconfig={token}",
        # The pod's ports may be taken on this machine; later flags win.
        f"--health-port={health_port}", f"--metrics-port={metrics_port}",
    ]  # fmt: skip
    with log.open("w") as output:
        operator = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            assert operator.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
            url = f"http://127.0.0.1:{health_port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:  # not listening yet, or not healthy yet (HTTPError)
                return False

        eventually(healthy, timeout=30, interval=0.3, what="the probes' /healthz")

        key_version = kms_key_factory("EC_SIGN_P256_SHA256")
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, other_namespace, "issuers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Issuer",
                "metadata": {"name": "ca"},
                "spec": {
                    "kms": {"cloudKMS": {"keyVersion": key_version}},
                    "x509": {"selfSigned": {}},
                    "podCertificates": {"enabled": True},
                    "certificateSigningRequests": {"enabled": True},
                },
            },
        )  # fmt: skip
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, other_namespace, "certificates",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Certificate",
                "metadata": {"name": "web"},
                "spec": {
                    "issuerRef": {"name": "ca", "kind": "Issuer"},
                    "secretName": "web-tls",
                    "x509": {
                        "commonName": f"web.{other_namespace}.svc",
                        "dnsNames": [f"web.{other_namespace}.svc"],
                    },
                },
            },
        )  # fmt: skip
        for plural, name in (("issuers", "ca"), ("certificates", "web")):
            wait_ready(kube, plural, other_namespace, name, log)
        secret: Any = kube.core.read_namespaced_secret("web-tls", other_namespace)
        assert secret.data["tls.crt"] and secret.data["tls.key"]
        owners = [(o.kind, o.name) for o in secret.metadata.owner_references or []]
        assert ("Certificate", "web") in owners, "garbage collection replaces delete rights"
        # The trust bundle ConfigMap (configmaps get/create) reaches the namespace too.
        bundle = configmap_name(("Issuer", other_namespace, "ca"))
        eventually(
            lambda: kube.core.read_namespaced_config_map(bundle, other_namespace),
            timeout=15,
            what=f"ConfigMap {bundle}",
        )
        # Pod certificates: a PodCertificateRequest answered through its status (sign) and
        # the signer-linked ClusterTrustBundle (attest) work with the chart's grants.
        signer = f"issuers.signet.dev/{other_namespace}.ca"
        node = create_node(kube)
        try:
            pod = create_pod(kube, other_namespace, node["metadata"]["name"], "app", [signer])
            request = create_request(kube, pod, node, signer, generate_key("ECDSAP256"))
            answered = wait_answered(kube, other_namespace, request)
            assert (answer(answered) or {}).get("type") == "Issued", answered.get("status")
        finally:
            kube.core.delete_node(node["metadata"]["name"])
        # CertificateSigningRequests (cluster-scoped): watched, and answered with
        # status.certificate, which takes both certificatesigningrequests/status and sign.
        user, groups = csrs.service_account(other_namespace, "app")
        csr = csrs.create_csr(
            kube,
            signer,
            csrs.pkcs10(csrs.generate_key(), dns_names=[f"app.{other_namespace}.svc"]),
            user=user,
            groups=[*groups, "system:masters"],  # may create it; Signet reads no groups of it
        )
        try:
            csrs.approve(kube, csr)
            signed = csrs.wait_answered(kube, csr)
            assert csrs.certificate(signed), signed.get("status")
        finally:
            kube.kubectl("delete", "csr", csr, "--ignore-not-found", "--wait=false")
        eventually(
            lambda: kube.custom.get_cluster_custom_object(
                "certificates.k8s.io",
                "v1",
                "clustertrustbundles",
                bundle_name(("Issuer", other_namespace, "ca")),
            ),
            timeout=15,
            what="the issuer's ClusterTrustBundle",
        )
        time.sleep(1)  # let any trailing request (events) fail loudly if it must
        logged = log.read_text()
        # Signet's ApiError says "HTTP 403 Forbidden"; kopf's APIForbiddenError and the
        # apiserver's Status message say "forbidden". (A bare "403" also matches timestamps.)
        for forbidden in ("HTTP 403", "Forbidden", "forbidden"):
            assert forbidden not in logged, f"RBAC denial in operator log:\n{logged[-3000:]}"
    finally:
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait(5)

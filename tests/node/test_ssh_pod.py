"""examples/ssh on the node: the host certificate and the trust ConfigMap mounted into a pod
serve a real sshd, and a user certificate logs in with @cert-authority host trust.

sshd runs on the host with the pod's own volume files (the kubelet's folder is shared with
the host), rather than in the pod: the workload image holds one static binary, and an sshd
image would have to be assembled from the host's shared libraries. What is under test is
unchanged: the files the kubelet mounted from Signet's Secret and ConfigMap.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from signet.kms.emulator import EmulatorServer
from signet_dev.controlplane import free_port
from signet_dev.node import LocalNode, pod_manifest
from tests import openssh
from tests.kube import ROOT, Kube
from tests.node.pods import example_objects, run_pod, volume_path
from tests.operator.harness import OperatorProcess, secret_data, wait_condition

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sshd exited: {log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"sshd did not listen on {port}: {log.read_text()}")


def test_sshd_with_the_pods_host_certificate_accepts_a_user_certificate(
    crds: Kube,
    node: LocalNode,
    signet_operator: OperatorProcess,
    kms_emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    sshd = openssh.sshd_binary()
    kms_emulator.ensure_key("demo", "ca", "EC_SIGN_P256_SHA256")
    namespace = f"ssh-{uuid.uuid4().hex[:8]}"
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": example_objects(namespace, ROOT / "examples" / "ssh"),
        }
    )
    try:
        wait_condition(crds, namespace, "bastion-host", timeout=60)
        wait_condition(crds, namespace, "ops-user", timeout=60)
        pod = run_pod(
            crds,
            node,
            pod_manifest(
                "bastion",
                namespace,
                ["pause"],
                volumes=[
                    {
                        "name": "host-key",
                        "secret": {"secretName": "bastion-host-key", "defaultMode": 0o400},
                    },
                    {"name": "trust", "configMap": {"name": "signet-issuer-ssh-ca-ca"}},
                ],
                mounts=[
                    {"name": "host-key", "mountPath": "/etc/ssh/signet", "readOnly": True},
                    {"name": "trust", "mountPath": "/etc/ssh/trust", "readOnly": True},
                ],
            ),
        )
        host_volume = volume_path(node, pod.metadata.uid, "host-key")
        trust_volume = volume_path(node, pod.metadata.uid, "trust", kind="configmap")
        port, log = free_port(), tmp_path / "sshd.log"
        config = openssh.write_sshd_config(
            tmp_path,
            port=port,
            host_key=host_volume / "ssh-privatekey",
            host_cert=host_volume / "ssh-certificate",
            user_cas=trust_volume / "ssh-ca.pub",
            principals=_write(tmp_path / "principals", b"ops\n"),
        )
        user = secret_data(crds, namespace, "ops-user-key")
        user_key = _write(tmp_path / "id", user["ssh-privatekey"], 0o600)
        user_cert = _write(tmp_path / "id-cert.pub", user["ssh-certificate"])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_listening(port, proc, log)
            result = subprocess.run(
                [
                    "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(user_key),
                    "-o", f"CertificateFile={user_cert}", "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                    # The pod's mounted ConfigMap is the only known-hosts entry.
                    "-o", f"UserKnownHostsFile={trust_volume / 'ssh_known_hosts'}",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=bastion",
                    "-o", "ConnectTimeout=10", f"{getpass.getuser()}@127.0.0.1", "echo signet-ok",
                ],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr + log.read_text()[-3000:]
            assert result.stdout.strip() == "signet-ok"
            assert "ID ops@ssh-example (serial " in log.read_text()
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        crds.kubectl("delete", "namespace", namespace, "--wait=false")

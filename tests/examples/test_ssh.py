"""examples/ssh: a real sshd with the host Secret and the trust ConfigMap accepts a real
ssh client holding the user Secret, with strict host key checking against the CA."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from signet_dev.controlplane import free_port
from tests import openssh
from tests.kube import Kube
from tests.operator.harness import secret_data, wait_condition

pytestmark = pytest.mark.cluster

NS = "ssh-example"
HOST_NAME = "bastion.example.internal"


@pytest.fixture
def sshd_binary() -> str:
    return openssh.sshd_binary()


def test_ssh_login_with_signet_host_and_user_certificates(
    crds: Kube, apply_example: Callable[[str], str], sshd_binary: str, tmp_path: Path
) -> None:
    apply_example("ssh")
    wait_condition(crds, NS, "bastion-host")
    wait_condition(crds, NS, "ops-user")
    host = secret_data(crds, NS, "bastion-host-key")
    user = secret_data(crds, NS, "ops-user-key")
    trust = crds.core.read_namespaced_config_map("signet-issuer-ssh-ca-ca", NS).data
    assert set(trust) == {"ssh-ca.pub", "ssh_known_hosts"}  # SSH-only issuer: no ca.crt

    # Server side: only what the Secret and the ConfigMap provide.
    host_key = openssh.write_file(tmp_path / "host_key", host["ssh-privatekey"], 0o600)
    host_cert = openssh.write_file(tmp_path / "host_key-cert.pub", host["ssh-certificate"])
    user_cas = openssh.write_file(tmp_path / "user_ca_keys", trust["ssh-ca.pub"].encode())
    principals = openssh.write_file(tmp_path / "principals", b"ops\n")
    port, log = free_port(), tmp_path / "sshd.log"
    config = openssh.write_sshd_config(
        tmp_path,
        port=port,
        host_key=host_key,
        host_cert=host_cert,
        user_cas=user_cas,
        principals=principals,
    )
    checked = subprocess.run(
        [sshd_binary, "-t", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr

    # Client side: the user Secret, and the ConfigMap's @cert-authority line as the only
    # known host entry.
    user_key = openssh.write_file(tmp_path / "id", user["ssh-privatekey"], 0o600)
    user_cert = openssh.write_file(tmp_path / "id-cert.pub", user["ssh-certificate"])
    known_hosts = openssh.write_file(tmp_path / "known_hosts", trust["ssh_known_hosts"].encode())
    assert trust["ssh_known_hosts"].startswith("@cert-authority * ")

    def ssh(alias: str) -> subprocess.CompletedProcess[str]:
        return openssh.ssh_command(port, user_key, user_cert, known_hosts, alias)

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sshd_binary, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        openssh.wait_listening(port, proc, log)
        result = ssh(HOST_NAME)
        assert result.returncode == 0, result.stderr + log.read_text()[-3000:]
        assert result.stdout.strip() == "signet-ok"
        assert "ID ops@ssh-example (serial " in log.read_text()
        # The host certificate names bastion and bastion.example.internal only: the same
        # server under another name is rejected, so the check above was a real one.
        spoofed = ssh("db.example.internal")
        assert spoofed.returncode == 255
        assert "Host key verification failed" in spoofed.stderr
    finally:
        proc.terminate()
        proc.wait(10)

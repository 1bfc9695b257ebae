"""SSH across a CA rotation, judged by a real sshd and ssh client: during the overlap the
published TrustedUserCAKeys and @cert-authority lines accept certificates of both CAs;
after retirement only the new CA's."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from signet_dev.controlplane import free_port
from tests import openssh
from tests.kube import Kube, eventually
from tests.operator.harness import (
    OperatorProcess,
    certificate_manifest,
    issuer_manifest,
    secret_data,
    wait_condition,
    wait_issuer_ready,
)
from tests.operator.test_rotation import ALGORITHM, _phase, _rotate

pytestmark = pytest.mark.cluster

HOST = "bastion.example.internal"


@contextmanager
def sshd(folder: Path, host: dict[str, bytes], user_cas: str, principal: str) -> Iterator[int]:
    binary = openssh.sshd_binary()
    folder.mkdir()
    port, log = free_port(), folder / "sshd.log"
    config = openssh.write_sshd_config(
        folder,
        port=port,
        host_key=openssh.write_file(folder / "host", host["ssh-privatekey"], 0o600),
        host_cert=openssh.write_file(folder / "host-cert.pub", host["ssh-certificate"]),
        user_cas=openssh.write_file(folder / "user_cas", user_cas.encode()),
        principals=openssh.write_file(folder / "principals", f"{principal}\n".encode()),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        openssh.wait_listening(port, proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _trust(kube: Kube, namespace: str, lines: int) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        data = kube.core.read_namespaced_config_map("signet-issuer-ca-ca", namespace).data
        return data if len(data["ssh-ca.pub"].splitlines()) == lines else None

    result: dict[str, str] = eventually(check, what=f"{lines} SSH CA keys published")
    return result


def test_sshd_accepts_both_cas_during_the_overlap_and_only_the_new_one_after(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    old_key, new_key = (kms_key_factory(ALGORITHM, fresh=True) for _ in range(2))
    crds.apply(
        issuer_manifest(
            "ca", old_key, namespace=namespace, x509={"selfSigned": {}},
            policy={"allowedSSHPrincipals": [f"{namespace}-*", HOST]},
            rotation={"trustPropagation": "3s", "reissueQPS": 5, "retirementGrace": "3s"},
        )
    )  # fmt: skip
    wait_issuer_ready(crds, namespace, "ca")
    principal = f"{namespace}-ops"
    crds.apply(
        certificate_manifest(
            "user", namespace, "ca", ssh={"type": "user", "principals": [principal]}
        )
    )
    crds.apply(
        certificate_manifest(
            "host", namespace, "ca",
            ssh={"type": "host", "principals": [HOST]},
        )
    )  # fmt: skip
    for name in ("user", "host"):
        wait_condition(crds, namespace, name, timeout=60)
    old_user = secret_data(crds, namespace, "user-identity")
    old_host = secret_data(crds, namespace, "host-identity")

    _rotate(crds, namespace, "ca", new_key)
    overlap = _trust(crds, namespace, 2)
    eventually(
        lambda: (
            secret_data(crds, namespace, "user-identity")["ssh-certificate"]
            != old_user["ssh-certificate"]
        ),
        timeout=60,
        what="the user certificate re-issued by the new CA",
    )
    new_user = secret_data(crds, namespace, "user-identity")

    def login(port: int, user: dict[str, bytes], known_hosts: str, tag: str) -> bool:
        folder = tmp_path / f"client-{tag}"
        folder.mkdir(exist_ok=True)
        result = openssh.ssh_command(
            port,
            openssh.write_file(folder / "id", user["ssh-privatekey"], 0o600),
            openssh.write_file(folder / "id-cert.pub", user["ssh-certificate"]),
            openssh.write_file(folder / "known_hosts", known_hosts.encode()),
            HOST,
        )
        ok = result.returncode == 0 and result.stdout.strip() == "signet-ok"
        print(tag, ok, result.stderr[-500:])  # shown when the test fails
        return ok

    # The overlap: both user CAs trusted, and the old host certificate verifies against
    # the published @cert-authority lines.
    with sshd(tmp_path / "overlap", old_host, overlap["ssh-ca.pub"], principal) as port:
        assert login(port, old_user, overlap["ssh_known_hosts"], "old")
        assert login(port, new_user, overlap["ssh_known_hosts"], "new")

    stable = _phase(crds, namespace, "ca", "Stable", timeout=90)
    assert stable["status"]["keyVersion"] == new_key
    final = _trust(crds, namespace, 1)
    assert final["ssh-ca.pub"].strip() == stable["status"]["sshCAPublicKey"]
    new_host = secret_data(crds, namespace, "host-identity")
    assert new_host["ssh-certificate"] != old_host["ssh-certificate"]
    with sshd(tmp_path / "after", new_host, final["ssh-ca.pub"], principal) as port:
        assert login(port, new_user, final["ssh_known_hosts"], "new-after")
        assert not login(port, old_user, final["ssh_known_hosts"], "old-after")
    # A host still presenting the old CA's certificate is no longer trusted either.
    with sshd(tmp_path / "stale-host", old_host, final["ssh-ca.pub"], principal) as port:
        assert not login(port, new_user, final["ssh_known_hosts"], "stale-host")

"""OpenSSH certificates from every SSH-capable KMS algorithm, checked by ssh-keygen and sshd."""

from __future__ import annotations

import base64
import datetime
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from signet.kms.emulator import Counters
from signet.pki.keys import (
    LeafPrivateKey,
    generate_private_key,
    openssh_fingerprint,
    private_key_to_openssh,
)
from signet.pki.ssh import (
    BACKDATE,
    SshCertRequest,
    authorized_keys_line,
    build_ssh_certificate,
    check_ssh_ca_algorithm,
    check_ssh_ca_key,
    known_hosts_line,
    public_key_line,
)
from tests import openssh
from tests.pki.conftest import SSH_CA_ALGORITHMS, CaFactory, KmsCa, exact, run

LeafKeys = Callable[[str, int | None], LeafPrivateKey]

SSH_LEAF_TYPES = [("ECDSA", 256), ("ECDSA", 384), ("Ed25519", None), ("RSA", 2048), ("ECDSA", 521)]

CA_SIGNATURE = {
    "EC_SIGN_P256_SHA256": ("ECDSA", "ecdsa-sha2-nistp256"),
    "EC_SIGN_P384_SHA384": ("ECDSA", "ecdsa-sha2-nistp384"),
    "EC_SIGN_ED25519": ("ED25519", "ssh-ed25519"),
    "RSA_SIGN_PKCS1_2048_SHA256": ("RSA", "rsa-sha2-256"),
    "RSA_SIGN_PKCS1_3072_SHA256": ("RSA", "rsa-sha2-256"),
    "RSA_SIGN_PKCS1_4096_SHA256": ("RSA", "rsa-sha2-256"),
    "RSA_SIGN_PKCS1_4096_SHA512": ("RSA", "rsa-sha2-512"),
}
"""ssh-keygen's name for the CA key type and the signature algorithm it reports."""
HOST_ALIAS = "signet-e2e-host"
USER_PRINCIPAL = "signet-e2e"


def certify(
    ca: KmsCa,
    request: SshCertRequest,
    key: LeafPrivateKey,
    now: datetime.datetime | None = None,
) -> SSHCertificate:
    return ca.sign(lambda k: build_ssh_certificate(request, key.public_key(), k, now=now))


def keygen_list(tmp_path: Path, cert: SSHCertificate) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "cert.pub"
    path.write_bytes(cert.public_bytes() + b"\n")
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        timeout=30,
        check=False,
    )


def test_algorithm_tables_agree() -> None:
    assert sorted(CA_SIGNATURE) == sorted(SSH_CA_ALGORITHMS)


@pytest.mark.parametrize("cert_type", ["user", "host"])
@pytest.mark.parametrize("algorithm", SSH_CA_ALGORITHMS)
def test_ssh_keygen_reads_the_certificate(
    algorithm: str,
    cert_type: str,
    kms_ca: CaFactory,
    leaf_keys: LeafKeys,
    kms_counters: Counters,
    tmp_path: Path,
) -> None:
    ca = kms_ca(algorithm)
    index = SSH_CA_ALGORITHMS.index(algorithm) + (cert_type == "host")
    key = leaf_keys(*SSH_LEAF_TYPES[index % len(SSH_LEAF_TYPES)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if cert_type == "user":
        request = SshCertRequest(
            cert_type="user",
            key_id="alice@example/laptop",
            principals=("alice", "deploy"),
            duration=datetime.timedelta(hours=8),
            force_command="uptime",
            source_addresses=("10.0.0.0/8", "2001:db8::/32"),
            extensions=("permit-pty", "permit-agent-forwarding"),
        )
    else:
        request = SshCertRequest(
            cert_type="host",
            key_id="web-1",
            principals=("web-1.example.com", "web-1"),
            duration=datetime.timedelta(days=30),
        )
    kms_counters.reset()
    cert = certify(ca, request, key, now)
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 1
    cert.verify_cert_signature()
    assert cert.type is (
        SSHCertificateType.USER if cert_type == "user" else SSHCertificateType.HOST
    )

    result = keygen_list(tmp_path, cert)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = [line.strip() for line in out.splitlines()]
    cert_key_type = cert.public_bytes().split()[0].decode()
    assert f"Type: {cert_key_type} {cert_type} certificate" in lines, out
    assert f'Key ID: "{request.key_id}"' in lines
    assert f"Serial: {cert.serial}" in lines
    ca_fp = openssh_fingerprint(ca.certificate.public_key())
    kind, signature = CA_SIGNATURE[algorithm]
    signing = f"Signing CA: {kind} {ca_fp} (using {signature})"
    assert signing in lines, out
    assert any(
        line.startswith("Public key: ") and line.endswith(openssh_fingerprint(key.public_key()))
        for line in lines
    ), out
    fmt = "%Y-%m-%dT%H:%M:%S"
    start = (now - BACKDATE).strftime(fmt)
    end = (now + request.duration).strftime(fmt)
    assert f"Valid: from {start} to {end}" in lines, out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == list(request.principals)
    if cert_type == "user":
        assert "force-command uptime" in lines
        assert "source-address 10.0.0.0/8,2001:db8::/32" in lines
        extensions = out.split("Extensions:")[1].split()
        assert extensions == ["permit-agent-forwarding", "permit-pty"]
    else:
        assert "Critical Options: (none)" in lines
        assert "Extensions: (none)" in lines


@pytest.mark.parametrize("algorithm", ["RSA_SIGN_PKCS1_2048_SHA256", "EC_SIGN_ED25519"])
def test_ssh_keygen_rejects_a_tampered_certificate(
    algorithm: str, kms_ca: CaFactory, leaf_keys: LeafKeys, tmp_path: Path
) -> None:
    """ssh-keygen verifies the CA signature, so the check above is not just parsing."""
    ca = kms_ca(algorithm)
    request = SshCertRequest("user", "mallory", ("alice",), datetime.timedelta(hours=1))
    cert = certify(ca, request, leaf_keys("Ed25519", None))
    kind, blob = cert.public_bytes().split()
    raw = bytearray(base64.b64decode(blob))
    needle = raw.find(b"alice")
    raw[needle] ^= 0x01  # "alice" -> "`lice": a different principal, same length
    path = tmp_path / "cert.pub"
    path.write_bytes(kind + b" " + base64.b64encode(bytes(raw)) + b"\n")
    result = run(["ssh-keygen", "-L", "-f", str(path)])
    assert result.returncode != 0
    assert "invalid key: incorrect signature" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "algorithm",
    ["RSA_SIGN_PSS_2048_SHA256", "RSA_SIGN_PSS_3072_SHA256", "RSA_SIGN_PSS_4096_SHA256"],
)
def test_pss_keys_cannot_sign_ssh_certificates(
    algorithm: str, kms_ca: CaFactory, leaf_keys: LeafKeys, kms_counters: Counters
) -> None:
    ca = kms_ca(algorithm)
    kms_counters.reset()
    request = SshCertRequest("user", "x", ("alice",), datetime.timedelta(hours=1))
    with pytest.raises(
        ValueError,
        match=exact(
            f"{algorithm} cannot sign SSH certificates; OpenSSH only accepts RSA PKCS#1 v1.5 "
            "signatures (rsa-sha2-256, rsa-sha2-512)"
        ),
    ):
        certify(ca, request, leaf_keys("Ed25519", None))
    assert kms_counters.count("AsymmetricSign", ca.key_version) == 0
    with pytest.raises(ValueError, match=f"^{algorithm} cannot sign SSH certificates"):
        check_ssh_ca_algorithm(algorithm)
    with pytest.raises(ValueError, match=f"^{algorithm} cannot sign SSH certificates"):
        ca.sign(check_ssh_ca_key)


@pytest.mark.parametrize("algorithm", SSH_CA_ALGORITHMS)
def test_ssh_capable_algorithms_pass_the_check(algorithm: str) -> None:
    check_ssh_ca_algorithm(algorithm)


def test_public_key_lines(kms_ca: CaFactory) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    key = ca.certificate.public_key()
    line = public_key_line(key, "signet user CA")
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" signet user CA")
    assert authorized_keys_line(key, ["alice", "deploy"]) == (
        'cert-authority,principals="alice,deploy" ' + public_key_line(key)
    )
    assert known_hosts_line(key, ["*.example.com"]) == (
        "@cert-authority *.example.com " + public_key_line(key)
    )
    with pytest.raises(ValueError, match=exact("comment 'a\\nb' must be printable ASCII")):
        public_key_line(key, "a\nb")


# --- a real sshd -------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    root: Path
    log: Path
    host_ca: KmsCa

    def log_mark(self) -> int:
        """Current size of the sshd log, to read only what a later connection adds."""
        return self.log.stat().st_size

    def log_since(self, mark: int) -> str:
        return self.log.read_bytes()[mark:].decode(errors="replace")

    def ssh(
        self,
        key: LeafPrivateKey,
        cert: SSHCertificate,
        known_hosts: str,
        command: str = "echo signet-ok",
        name: str = "id",
    ) -> subprocess.CompletedProcess[str]:
        key_path = self.root / f"{name}.key"
        key_path.write_bytes(private_key_to_openssh(key))
        key_path.chmod(0o600)
        cert_path = self.root / f"{name}-cert.pub"
        cert_path.write_bytes(cert.public_bytes() + b"\n")
        hosts = self.root / f"{name}.known_hosts"
        hosts.write_text(known_hosts + "\n")
        return run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(self.port),
                "-i",
                str(key_path),
                "-o",
                f"CertificateFile={cert_path}",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={hosts}",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                f"HostKeyAlias={HOST_ALIAS}",
                "-o",
                "ConnectTimeout=10",
                f"{getpass.getuser()}@127.0.0.1",
                command,
            ]
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def sshd(kms_ca: CaFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 trusting every SSH-capable KMS CA for users, host cert from one."""
    binary = openssh.sshd_binary()
    root = tmp_path_factory.mktemp("sshd")
    host_ca = kms_ca("RSA_SIGN_PKCS1_3072_SHA256")
    host_key = generate_private_key("ECDSA", 256)
    host_key_path = root / "host.key"
    host_key_path.write_bytes(private_key_to_openssh(host_key))
    host_key_path.chmod(0o600)
    host_cert = certify(
        host_ca,
        SshCertRequest("host", "sshd-e2e", (HOST_ALIAS,), datetime.timedelta(hours=1)),
        host_key,
    )
    (root / "host.key-cert.pub").write_bytes(host_cert.public_bytes() + b"\n")
    (root / "user_ca_keys").write_text(
        "\n".join(
            public_key_line(kms_ca(alg).certificate.public_key(), alg) for alg in SSH_CA_ALGORITHMS
        )
        + "\n"
    )
    (root / "principals").write_text(USER_PRINCIPAL + "\n")
    port = _free_port()
    config = openssh.write_sshd_config(
        root,
        port=port,
        host_key=host_key_path,
        host_cert=root / "host.key-cert.pub",
        user_cas=root / "user_ca_keys",
        principals=root / "principals",
    )
    log = root / "sshd.log"
    checked = run([binary, "-t", "-f", str(config)])
    assert checked.returncode == 0, checked.stderr
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(port, proc, log)
        yield Sshd(port, root, log, host_ca)
    finally:
        proc.terminate()
        proc.wait(10)


def _user_request(**overrides: object) -> SshCertRequest:
    kwargs: dict[str, object] = {
        "cert_type": "user",
        "key_id": "e2e",
        "principals": (USER_PRINCIPAL,),
        "duration": datetime.timedelta(minutes=10),
    }
    kwargs.update(overrides)
    return SshCertRequest(**kwargs)  # type: ignore[arg-type]


def _known_hosts(sshd: Sshd) -> str:
    return known_hosts_line(sshd.host_ca.certificate.public_key(), [HOST_ALIAS])


@pytest.mark.parametrize("algorithm", SSH_CA_ALGORITHMS)
def test_sshd_accepts_user_certificates(
    algorithm: str, sshd: Sshd, kms_ca: CaFactory, leaf_keys: LeafKeys
) -> None:
    ca = kms_ca(algorithm)
    key = leaf_keys(*SSH_LEAF_TYPES[SSH_CA_ALGORITHMS.index(algorithm) % len(SSH_LEAF_TYPES)])
    cert = certify(ca, _user_request(key_id=f"e2e-{algorithm}"), key)
    result = sshd.ssh(key, cert, _known_hosts(sshd))
    assert result.returncode == 0, result.stderr + sshd.log.read_text()[-3000:]
    assert result.stdout.strip() == "signet-ok"
    assert f"ID e2e-{algorithm} (serial {cert.serial})" in sshd.log.read_text()


def test_sshd_refuses_expired_and_wrong_principal(
    sshd: Sshd, kms_ca: CaFactory, leaf_keys: LeafKeys
) -> None:
    ca = kms_ca("EC_SIGN_P256_SHA256")
    key = leaf_keys("Ed25519", None)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    expired = certify(ca, _user_request(key_id="e2e-expired"), key, now=past)
    mark = sshd.log_mark()
    result = sshd.ssh(key, expired, _known_hosts(sshd), name="expired")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert "Certificate invalid: expired" in sshd.log_since(mark)

    stranger = certify(ca, _user_request(key_id="e2e-stranger", principals=("mallory",)), key)
    mark = sshd.log_mark()
    result = sshd.ssh(key, stranger, _known_hosts(sshd), name="stranger")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert "Certificate does not contain an authorized principal" in sshd.log_since(mark)

    # The same key with a good certificate gets in, so the refusals were about the certs.
    good = certify(ca, _user_request(key_id="e2e-good"), key)
    assert sshd.ssh(key, good, _known_hosts(sshd), name="good").returncode == 0


def test_sshd_enforces_critical_options(sshd: Sshd, kms_ca: CaFactory, leaf_keys: LeafKeys) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    key = leaf_keys("ECDSA", 256)
    forced = certify(ca, _user_request(force_command="echo forced"), key)
    result = sshd.ssh(key, forced, _known_hosts(sshd), command="echo asked", name="forced")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "forced"

    elsewhere = certify(ca, _user_request(source_addresses=("192.0.2.0/24",)), key)
    mark = sshd.log_mark()
    result = sshd.ssh(key, elsewhere, _known_hosts(sshd), name="elsewhere")
    assert result.returncode == 255
    assert "not from a permitted source address (127.0.0.1)" in sshd.log_since(mark)

    local = certify(ca, _user_request(source_addresses=("127.0.0.0/8", "::1")), key)
    assert sshd.ssh(key, local, _known_hosts(sshd), name="local").returncode == 0


def test_client_trusts_host_certificate_only_from_its_ca(
    sshd: Sshd, kms_ca: CaFactory, leaf_keys: LeafKeys
) -> None:
    ca = kms_ca("EC_SIGN_P384_SHA384")
    key = leaf_keys("ECDSA", 384)
    cert = certify(ca, _user_request(), key)
    # The good case is covered above; here the client trusts a different host CA.
    other = known_hosts_line(kms_ca("EC_SIGN_ED25519").certificate.public_key(), [HOST_ALIAS])
    result = sshd.ssh(key, cert, other, name="wrong-host-ca")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    result = sshd.ssh(key, cert, _known_hosts(sshd), name="right-host-ca")
    assert result.returncode == 0, result.stderr

"""What every test that starts a real sshd needs first."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def sshd_binary() -> str:
    """The sshd to run, with its privilege-separation folder in place; skips the test when
    OpenSSH is not installed (.ci/run installs it)."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed")
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        if os.geteuid() != 0:
            pytest.skip("sshd needs /run/sshd, which only root can create")
        privsep.mkdir(mode=0o755, parents=True)
    return SSHD


def write_sshd_config(
    folder: Path,
    *,
    port: int,
    host_key: Path,
    host_cert: Path,
    user_cas: Path,
    principals: Path,
) -> Path:
    """A certificate-only sshd on 127.0.0.1: host certificate, user CAs, an explicit
    principals file, no passwords, no authorized_keys. Returns the config path."""
    config = folder / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
HostCertificate {host_cert}
TrustedUserCAKeys {user_cas}
AuthorizedPrincipalsFile {principals}
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile {folder / "sshd.pid"}
LogLevel VERBOSE
"""
    )
    return config


def write_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until sshd accepts connections (or fail with its log if it exited)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sshd exited: {log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {port}: {log.read_text()}")


def ssh_command(
    port: int, key: Path, certificate: Path, known_hosts: Path, alias: str
) -> subprocess.CompletedProcess[str]:
    """One batch-mode login presenting ``certificate``, trusting only ``known_hosts``."""
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key),
            "-o", f"CertificateFile={certificate}", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={alias}", "-o", "ConnectTimeout=10",
            f"{getpass.getuser()}@127.0.0.1", "echo signet-ok",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

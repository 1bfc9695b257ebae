"""What every test that starts a real sshd needs first."""

from __future__ import annotations

import os
import shutil
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

"""What `signet run` and the command line load at start, each checked in a fresh process.

Every module imported at start stays resident for the life of the operator. Those that
only some deployments or some subcommands use are imported where they are first needed;
these tests keep a later change from pulling them back in at start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import signet

SOURCE = Path(signet.__file__).resolve().parents[1]

RUN_PATH = (
    # What `signet run` imports before it hands over to kopf (signet.controller.main.run).
    "from signet.controller.main import keep_kubernetes_client_out\n"
    "keep_kubernetes_client_out()\n"
    "import kopf\n"
    "from signet.controller import handlers, kopf_adapter\n"
    "from signet.controller.pacing import ListPacer\n"
    "from signet.controller.runtime import Config\n"
)


def imported_after(code: str, modules: Sequence[str]) -> list[str]:
    """Which of ``modules`` (or their submodules) a fresh interpreter has loaded after
    running ``code``."""
    probe = (
        f"{code}\n"
        "import sys\n"
        f"wanted = {list(modules)!r}\n"
        "print(' '.join(sorted({w for w in wanted for m in sys.modules\n"
        "    if sys.modules[m] is not None and (m == w or m.startswith(w + '.'))})))\n"
    )
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    return result.stdout.split()


def test_the_run_path_loads_no_pkcs11_backend() -> None:
    """python-pkcs11 (with asn1crypto) is loaded by the first PKCS#11 issuer's signer."""
    loaded = imported_after(
        RUN_PATH, ["pkcs11", "asn1crypto", "signet.kms.pkcs11signer", "signet.kms.pkcs11pool"]
    )
    assert loaded == []


def test_the_run_path_loads_no_other_subcommand() -> None:
    loaded = imported_after(
        RUN_PATH, ["signet.ops", "signet.kms.emulator", "signet.observe.audit_check"]
    )
    assert loaded == []


def test_the_command_line_loads_neither_kopf_nor_grpc() -> None:
    """Every subcommand builds the whole parser, `run`'s flags included: they must not
    bring the operator's libraries to `signet audit verify`."""
    loaded = imported_after(
        "import signet.cli\nsignet.cli.build_parser()\n",
        ["kopf", "grpc", "google.cloud", "pkcs11", "aiohttp"],
    )
    assert loaded == []


def test_the_probe_sees_what_the_run_path_loads() -> None:
    """The probe itself: what the run path does need shows up."""
    assert imported_after(RUN_PATH, ["kopf", "grpc", "prometheus_client"]) == [
        "grpc",
        "kopf",
        "prometheus_client",
    ]

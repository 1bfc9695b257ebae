"""`kubectl signet`: the console script kubectl-signet found by the real kubectl on PATH,
with kubectl's flags (--kubeconfig, --context, -n, -A) before or after the command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from signet.cli import build_kubectl_parser, kubectl_main
from tests.kube import Kube, kubectl_binary
from tests.operator.harness import certificate_manifest, wait_condition

PLUGIN = Path(sys.executable).parent / "kubectl-signet"


def kubectl_signet(*args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl signet ARGS`` with only the venv's bin added to PATH and no $KUBECONFIG, so
    the plugin is found the way kubectl finds plugins and uses only the flags given."""
    assert PLUGIN.exists(), f"{PLUGIN} missing: reinstall the package (make venv)"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = os.pathsep.join([str(PLUGIN.parent), env.get("PATH", "")])
    return subprocess.run(
        [kubectl_binary(), "signet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _with_context(kubeconfig: Path, folder: Path, namespace: str, current_ns: str) -> Path:
    """A copy of ``kubeconfig`` with a context ``signet-plugin`` defaulting to ``namespace``;
    the current context defaults to ``current_ns`` instead, so only --context finds it."""
    config = yaml.safe_load(kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    current["context"]["namespace"] = current_ns
    config["contexts"].append(
        {"name": "signet-plugin", "context": {**current["context"], "namespace": namespace}}
    )
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.split()]


@pytest.mark.cluster
def test_kubectl_signet_status_with_context_and_all_namespaces(
    crds: Kube, namespace: str, issuer: dict[str, Any], tmp_path: Path
) -> None:
    crds.apply(certificate_manifest("web", namespace, "ca"))
    wait_condition(crds, namespace, "web")
    elsewhere = f"empty-{uuid.uuid4().hex[:8]}"
    config = _with_context(crds.kubeconfig, tmp_path, namespace, elsewhere)

    listed = subprocess.run(
        [kubectl_binary(), "plugin", "list", "--name-only"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": os.pathsep.join([str(PLUGIN.parent), os.environ["PATH"]])},
    )
    assert "kubectl-signet" in listed.stdout.split(), listed.stdout + listed.stderr

    # The current context's namespace holds nothing ...
    result = kubectl_signet("status", f"--kubeconfig={config}")
    assert result.returncode == 0, result.stderr
    assert f"No Certificates in namespace {elsewhere}." in result.stdout

    # ... --context picks the one whose namespace has the Certificate (flags after the command
    # and before it, as kubectl takes them).
    for args in (
        ("status", "--kubeconfig", str(config), "--context", "signet-plugin"),
        ("--kubeconfig", str(config), "--context=signet-plugin", "status"),
    ):
        result = kubectl_signet(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].split()[:2] == ["CERTIFICATE", "READY"], args
        assert ["web", "True"] in [row[:2] for row in _rows(result.stdout)], result.stdout

    # -n beats the context's namespace; -A lists every namespace, before or after the command.
    result = kubectl_signet("status", f"--kubeconfig={config}", "-n", namespace)
    assert ["web", "True"] in [row[:2] for row in _rows(result.stdout)], result.stderr
    for order in (("status", "-A"), ("-A", "status")):
        result = kubectl_signet(*order, f"--kubeconfig={config}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "CERTIFICATE"]
        assert [namespace, "web", "True"] in [row[:3] for row in _rows(result.stdout)]

    missing = kubectl_signet("status", f"--kubeconfig={config}", "--context", "no-such-context")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: cannot load kubeconfig {config}"), missing.stderr
    assert "no-such-context" in missing.stderr


def test_kubectl_signet_offers_only_the_user_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_kubectl_parser()
    assert parser.prog == "kubectl signet"
    with pytest.raises(SystemExit) as exit_info:
        kubectl_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl signet ")
    for command in ("status", "renew", "inspect"):
        assert command in out
    for hidden in ("run", "audit", "kms-emulator"):
        with pytest.raises(SystemExit) as exit_info:
            kubectl_main([hidden])
        assert exit_info.value.code == 2
        assert f"invalid choice: '{hidden}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["-A", "inspect", "s"], "-A/--all-namespaces does not apply to inspect"),
        (["-n", "a", "status", "-A"], "exclude each other"),
    ],
)
def test_kubectl_flags_before_the_command_are_checked(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        kubectl_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kubectl signet"), err
    assert complaint in err

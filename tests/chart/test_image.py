"""The Dockerfile's install recipe works: no container engine here, so replay its build
stage on this machine. The files the build stage COPYs (nothing else) go into a fresh
context, a fresh virtualenv gets the same two installs (the hashed lock with
``--require-hashes``, then ``pip install --no-deps .``, non-editable, from PyPI, reusing
pip's wheel cache), and the entry point runs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.kube import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def build_stage() -> list[str]:
    """Instructions of the first stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    starts = [i for i, line in enumerate(instructions) if line.upper().startswith("FROM ")]
    assert len(starts) == 2, "expected a build stage and a runtime stage"
    return instructions[starts[0] : starts[1]]


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"]
    assert re.search(r"^USER 65532(:65532)?$", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["signet"]' in text and 'CMD ["run"]' in text
    assert "COPY --from=build /opt/signet /opt/signet" in text
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, ".dockerignore excludes everything not named"
    copied = {
        s.rstrip("/") for i in build_stage() if i.startswith("COPY ") for s in i.split()[1:-1]
    }
    for source in copied:
        assert f"!{source}" in ignored or f"!{source}/" in ignored, f"{source} is dockerignored"


@pytest.mark.slow
def test_build_stage_installs_a_working_signet_into_a_fresh_virtualenv(tmp_path: Path) -> None:
    context = tmp_path / "src"
    context.mkdir()
    pip_commands: list[list[str]] = []
    for instruction in build_stage():
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() == "COPY":
            *sources, destination = shlex.split(rest)
            assert not any(s.startswith("--") for s in sources), instruction
            target = context / destination.rstrip("/") if destination != "./" else context
            for source in sources:
                path = ROOT / source.rstrip("/")
                if path.is_dir():
                    # As .dockerignore has it: development-only code stays out of the image.
                    shutil.copytree(
                        path,
                        target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "signet_dev"),
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
        elif keyword.upper() == "RUN" and rest.startswith("pip install"):
            pip_commands.append(shlex.split(rest))
    assert pip_commands == [
        ["pip", "install", "--no-cache-dir", "--require-hashes", "-r", "requirements.lock"],
        ["pip", "install", "--no-cache-dir", "--no-deps", "."],
    ]

    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    for command in pip_commands:
        # Same commands, minus --no-cache-dir: the image wants small layers, the test speed.
        install = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        install += [a for a in command[2:] if a != "--no-cache-dir"]
        result = subprocess.run(
            install, cwd=context, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    signet = environment / "bin" / "signet"
    help_text = subprocess.run(
        [str(signet), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for command in ("run", "audit", "kms-emulator"):
        assert command in help_text
    assert "cluster" not in help_text  # development-only: python -m signet_dev
    run_help = subprocess.run(
        [str(signet), "run", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "--namespace" in run_help and "--peering" in run_help

    # Not an editable install, and nothing of the package was left behind.
    site = subprocess.run(
        [str(python), "-c", "import signet, pathlib; print(pathlib.Path(signet.__file__).parent)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    installed_package = Path(site)
    assert installed_package.is_relative_to(environment), installed_package
    wanted = {
        p.relative_to(ROOT / "operator" / "signet")
        for p in (ROOT / "operator" / "signet").rglob("*.py")
    }
    got = {p.relative_to(installed_package) for p in installed_package.rglob("*.py")}
    assert wanted <= got, f"missing from the wheel: {sorted(map(str, wanted - got))}"
    assert (installed_package / "py.typed").exists()
    dev = subprocess.run(
        [str(python), "-c", "import signet_dev"], capture_output=True, cwd=tmp_path, check=False
    )
    assert dev.returncode != 0, "development-only code made it into the image"

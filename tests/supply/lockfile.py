"""Reading requirements.lock (``uv pip compile --generate-hashes`` output) and pyproject.toml's
runtime dependencies, for the supply-chain tests."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.kube import ROOT

LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")
_VIA_PROJECT = "signet (pyproject.toml)"


@dataclass(frozen=True)
class Locked:
    """One entry of the lock: the requirement as written, its hashes and what it is for."""

    requirement: Requirement
    hashes: tuple[str, ...]
    via: tuple[str, ...]

    @property
    def name(self) -> NormalizedName:
        return canonicalize_name(self.requirement.name)

    @property
    def pinned(self) -> str | None:
        """The exact version when the entry is ``name==version`` and nothing else."""
        specifiers = list(self.requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            version = specifiers[0].version
            return None if "*" in version else version
        return None


def runtime_dependencies(pyproject: str | None = None) -> list[Requirement]:
    text = PYPROJECT.read_text() if pyproject is None else pyproject
    return [Requirement(r) for r in tomllib.loads(text)["project"]["dependencies"]]


def parse_lock(text: str | None = None) -> list[Locked]:
    """The entries of a pip requirements file with hashes and uv's ``# via`` annotations."""
    text = LOCK.read_text() if text is None else text
    entries: list[Locked] = []
    current: tuple[Requirement, tuple[str, ...]] | None = None
    via: list[str] = []

    def close() -> None:
        if current is not None:
            entries.append(Locked(current[0], current[1], tuple(via)))

    for line in re.sub(r"\\\n", " ", text).splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if current is not None and (comment.startswith("via") or line.startswith("    #")):
                via.extend(v.strip() for v in comment.removeprefix("via").split(",") if v.strip())
            continue
        if stripped.startswith("-"):
            raise AssertionError(f"unexpected option line in the lock: {stripped!r}")
        close()
        requirement = Requirement(_HASH.sub("", stripped).strip())
        current = (requirement, tuple(_HASH.findall(stripped)))
        via = []
    close()
    return entries


def problems(dependencies: list[Requirement], lock: list[Locked]) -> list[str]:
    """Why the lock does not serve these runtime dependencies (nothing when it does)."""
    found: list[str] = []
    by_name: dict[str, list[Locked]] = {}
    for entry in lock:
        by_name.setdefault(entry.name, []).append(entry)
        if entry.pinned is None:
            found.append(f"{entry.requirement}: not pinned to one version with ==")
        if not entry.hashes:
            found.append(f"{entry.requirement}: no --hash")
    for dependency in dependencies:
        name = canonicalize_name(dependency.name)
        entries = by_name.get(name, [])
        if not entries:
            found.append(f"{dependency}: not in the lock (run `make lock`)")
        for entry in entries:
            if entry.pinned is not None and not dependency.specifier.contains(
                entry.pinned, prereleases=True
            ):
                found.append(f"{dependency}: the lock pins {entry.pinned} (run `make lock`)")
    wanted = {canonicalize_name(d.name) for d in dependencies}
    for name in sorted({e.name for e in lock if _VIA_PROJECT in e.via} - wanted):
        found.append(f"{name}: locked as a direct dependency pyproject.toml no longer has")
    return found

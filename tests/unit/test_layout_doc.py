"""The README's code layout names every module of the product and of signet_dev: a map
that misses a room is worse than none."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESCRIBED_WHOLE = ("kms", "pki", "api")
"""Packages the layout describes as a whole rather than module by module."""


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Code layout.")
    return readme[start : readme.index("The Go tools are built", start)]


def _named(section: str, package: str, relative: Path) -> bool:
    if relative.parts[0] in DESCRIBED_WHOLE and package == "signet":
        return f"`{relative.parts[0]}/`" in section
    return f"`{relative.name}`" in section or f"`{relative}`" in section


def test_every_module_is_in_the_readme_layout() -> None:
    section = _layout_section()
    missing = [
        f"{package}/{path.relative_to(ROOT / 'operator' / package)}"
        for package in ("signet", "signet_dev")
        for path in sorted((ROOT / "operator" / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and not _named(section, package, path.relative_to(ROOT / "operator" / package))
    ]
    assert missing == []

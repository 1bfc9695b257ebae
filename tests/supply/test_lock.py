"""requirements.lock is current: every runtime dependency of pyproject.toml is pinned there
to a version its specifier allows, with hashes, so the image's ``pip install
--require-hashes -r requirements.lock`` installs what pyproject asks for. A dependency added
to pyproject.toml without ``make lock`` fails here."""

from __future__ import annotations

import tomllib

from tests.supply.lockfile import LOCK, PYPROJECT, parse_lock, problems, runtime_dependencies


def test_every_runtime_dependency_is_locked_pinned_and_hashed() -> None:
    dependencies = runtime_dependencies()
    lock = parse_lock()
    assert dependencies and lock
    assert problems(dependencies, lock) == []


def test_the_lock_is_universal_and_made_by_make_lock() -> None:
    header = LOCK.read_text().splitlines()[:2]
    assert header[1].strip("# ") == "make lock", header
    lock = parse_lock()
    # Several wheels per compiled package (Linux x86_64 and aarch64 among them), not one.
    cryptography = next(e for e in lock if e.name == "cryptography")
    assert len(cryptography.hashes) > 4
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    assert requires == ">=3.11", "make lock pins for Python 3.11 (--python-version)"


def test_an_unlocked_or_unsatisfied_dependency_is_reported() -> None:
    """The check above can fail: a pyproject with one more dependency, or a tighter one."""
    text = PYPROJECT.read_text()
    lock = parse_lock()
    added = text.replace("dependencies = [\n", 'dependencies = [\n    "rich>=13",\n', 1)
    assert problems(runtime_dependencies(added), lock) == [
        "rich>=13: not in the lock (run `make lock`)"
    ]
    pinned = next(e for e in lock if e.name == "pyyaml").pinned
    tighter = text.replace('"pyyaml>=6"', '"pyyaml>6,!=' + str(pinned) + '"', 1)
    assert problems(runtime_dependencies(tighter), lock) == [
        f"pyyaml!={pinned},>6: the lock pins {pinned} (run `make lock`)"
    ]
    removed = text.replace('    "pyyaml>=6",\n', "", 1)
    assert problems(runtime_dependencies(removed), lock) == [
        "pyyaml: locked as a direct dependency pyproject.toml no longer has"
    ]


def test_entries_without_a_pin_or_a_hash_are_reported() -> None:
    lock = parse_lock("kopf>=1.45 \\\n    --hash=sha256:" + "0" * 64 + "\npyyaml==6.0.4\n")
    assert problems([], lock) == [
        "kopf>=1.45: not pinned to one version with ==",
        "pyyaml==6.0.4: no --hash",
    ]

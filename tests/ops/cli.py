"""Run ``signet <command>`` in-process, as the console script would, capturing its output."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from signet.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def signet(*args: str, kubeconfig: Path | None = None) -> Result:
    argv = [*args, *([f"--kubeconfig={kubeconfig}"] if kubeconfig else [])]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Result(code, out.getvalue(), err.getvalue())


def field(output: str, label: str) -> str:
    """The value of ``Label:  value`` in ``signet inspect`` output."""
    for line in output.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == label:
            return value.strip()
    raise AssertionError(f"no {label!r} line in:\n{output}")

"""Reading audit trails: files, log lines with records in them, and the records."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from signet.observe.audit import (
    parse_record,
)


@dataclass(frozen=True)
class Location:
    """Where a line came from, for messages that send a reviewer straight to it."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


class Line(NamedTuple):
    """A line of an audit file, with where it came from for the report."""

    location: Location
    text: str


def read_lines(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Line]:
    """The lines of the files in the order given (rotated files oldest first).

    Split on ``\\n`` only: records may hold characters other splitters treat as line
    breaks. Bytes that are not UTF-8 are replaced, which then fails the hash check.
    """
    for path in paths:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                yield Line(Location(os.fspath(path), number), raw.decode("utf-8", "replace"))


def lines_of(texts: Iterable[str], source: str = "<input>") -> Iterator[Line]:
    """Number plain strings so results can point at them."""
    for number, text in enumerate(texts, 1):
        yield Line(Location(source, number), text)


def from_log(lines: Iterable[Line]) -> Iterator[Line]:
    """The audit records carried by operator log lines (plain or JSON log format), for a
    trail collected from the ``signet.audit`` log stream; other lines are dropped."""
    for line in lines:
        text = _embedded_record(line.text)
        if text is not None:
            yield Line(line.location, text)


def _embedded_record(text: str) -> str | None:
    text = text.strip()
    candidates = [text]
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        candidates.append(value["message"])
    start = text.find("{")
    if start > 0:
        candidates.append(text[start:])
    for candidate in candidates:
        record = parse_record(candidate)
        if record is not None and record["kind"].startswith("signet.dev/"):
            return candidate
    return None


def read_records(lines: Iterable[Line]) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Every JSON object on the lines with where it was; other lines are skipped (checking
    them is :func:`verify`'s job). A file holding one JSON array (an export from Cloud
    Logging) is read whole."""
    arrays: dict[str, list[str]] = {}
    for line in lines:
        source = line.location.source
        if source in arrays or (line.location.line == 1 and line.text.lstrip().startswith("[")):
            arrays.setdefault(source, []).append(line.text)
            continue
        try:
            value = json.loads(line.text)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield line.location, value
    for source, texts in arrays.items():
        try:
            value = json.loads("".join(texts))
        except ValueError:
            continue
        if isinstance(value, list):
            for index, item in enumerate(value, 1):
                if isinstance(item, dict):
                    yield Location(f"{source}[]", index), item

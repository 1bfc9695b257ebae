"""Go-style durations ("90m", "1h30m", "2.5h"), the format Kubernetes users already write."""

from __future__ import annotations

import datetime
import re

from signet.api.errors import SpecError
from signet.reasons import Reason

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, *, field: str) -> datetime.timedelta:
    """Parse a positive Go duration; ``field`` names the spec field for the error message."""
    if not isinstance(text, str) or not text:
        raise SpecError(
            Reason.INVALID_DURATION, f"{field}: expected a duration such as 24h, got {text!r}"
        )
    position, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or len(text) > 32:
        raise SpecError(
            Reason.INVALID_DURATION, f"{field}: {text[:40]!r} is not a duration like 24h"
        )
    if seconds <= 0:
        raise SpecError(
            Reason.INVALID_DURATION, f"{field}: duration must be positive, got {text!r}"
        )
    return datetime.timedelta(seconds=seconds)


def format_duration(value: datetime.timedelta) -> str:
    """The shortest Go-style rendering of whole seconds (for messages and status)."""
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{seconds}s" if seconds else "",
    ]
    return "".join(parts) or "0s"

"""Times as the Kubernetes API writes them: RFC 3339 in UTC, whole seconds, a ``Z``.

Status fields, annotations, Events and audit fields all use this one form, so a value read
in one place compares equal to the same instant written in another.
"""

from __future__ import annotations

import datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def timestamp(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime(FORMAT)


def timestamp_or_none(value: datetime.datetime | None) -> str | None:
    return None if value is None else timestamp(value)

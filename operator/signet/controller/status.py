"""Status as data: build the desired status, then write only what differs.

Comparing before writing is what makes a restart over healthy Certificates cost zero
writes, and what keeps a watch event caused by our own status patch from causing another.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from signet.api.times import timestamp_or_none

Obj = dict[str, Any]


def condition(
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
) -> Obj:
    """A condition; lastTransitionTime moves only when status does (Kubernetes convention)."""
    if previous and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    else:
        transition = timestamp_or_none(now)
    result: Obj = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def conditions_by_type(status: Mapping[str, Any] | None) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (status or {}).get("conditions") or []}


def _comparable(status: Mapping[str, Any]) -> Obj:
    copy = dict(status)
    copy["conditions"] = sorted(
        (
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ),
        key=lambda c: str(c.get("type")),
    )
    return copy


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Obj | None:
    """The merge patch turning ``current`` into ``desired``, or None when nothing changes.

    Fields absent from ``desired`` but present in ``current`` are set to null (removed).
    """
    current = current or {}
    if _comparable({k: v for k, v in current.items() if v is not None}) == _comparable(
        {k: v for k, v in desired.items() if v is not None}
    ):
        return None
    patch: Obj = {k: v for k, v in desired.items()}
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch

"""The status a Certificate should have, as data: Ready after issuance or a clean look,
Ready=False after a failure.

Pure functions of the body, the Secret summary and the time, so that every reason path can
be checked without a cluster, and so that comparing the result with the current status
(`status.status_patch`) decides whether a write is needed at all. Metrics and Events are the
caller's business.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from signet.api.times import timestamp, timestamp_or_none
from signet.controller.status import condition, conditions_by_type
from signet.decisions.certificate import Decision, retry_delay
from signet.reasons import Reason
from signet.secretformat import layout
from signet.secretformat.summary import SecretSummary

Obj = dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """A Certificate's run of failed attempts for one spec generation."""

    attempts: int
    generation: int
    next_retry: datetime.datetime

    def wait(self, generation: int, now: datetime.datetime) -> float | None:
        """Seconds until the next attempt is due for this generation; None when it is due
        now or the spec changed since (a new generation starts afresh)."""
        if generation != self.generation:
            return None
        seconds = (self.next_retry - now).total_seconds()
        return seconds if seconds > 0 else None


def next_failure(
    previous: Failure | None, generation: int | None, now: datetime.datetime
) -> Failure:
    """One more failed attempt: retry after 2 s, doubling, capped at 5 minutes. ``None``
    for the generation keeps the previous one (the body could not even be read)."""
    if generation is None:
        generation = previous.generation if previous else -1
    same = previous is not None and previous.generation == generation
    attempts = previous.attempts + 1 if same and previous else 1
    return Failure(attempts, generation, now + retry_delay(attempts))


def generation_of(body: Obj) -> int:
    return int(body["metadata"].get("generation") or 0)


def ready_status(
    body: Obj,
    summary: SecretSummary,
    renewal: datetime.datetime | None,
    now: datetime.datetime,
    *,
    trigger: Decision | None = None,
    revision: int | None = None,
) -> Obj:
    """Ready, with what the Secret holds; ``trigger`` after an issuance says why."""
    metadata = body["metadata"]
    previous = conditions_by_type(body.get("status"))
    generation = metadata.get("generation")
    annotations = summary.annotations
    conditions = [
        condition(
            "Ready",
            "True",
            Reason.READY,
            f"certificate is up to date and valid until {timestamp_or_none(summary.not_after)}",
            generation=generation,
            previous=previous.get("Ready"),
            now=now,
        )
    ]
    if trigger is not None:
        conditions.append(
            condition(
                "Issuing",
                "False",
                Reason.ISSUED,
                f"issued serial {summary.serial} because {trigger.reason}: {trigger.message}",
                generation=generation,
                previous=previous.get("Issuing"),
                now=now,
            )
        )
    elif "Issuing" in previous:
        kept = dict(previous["Issuing"])
        if kept.get("status") != "False" or kept.get("reason") != Reason.ISSUED:
            kept = condition(
                "Issuing",
                "False",
                Reason.UP_TO_DATE,
                "no issuance needed",
                generation=generation,
                previous=kept,
                now=now,
            )
        conditions.append(kept)
    return {
        "conditions": conditions,
        "notBefore": timestamp_or_none(summary.not_before),
        "notAfter": timestamp_or_none(summary.not_after),
        "renewalTime": timestamp_or_none(renewal),
        "serialNumber": summary.serial,
        "revision": revision
        if revision is not None
        else int(annotations.get(layout.REVISION, "0") or 0),
        "keyVersion": annotations.get(layout.KEY_VERSION),
        "spiffeID": annotations.get(layout.SPIFFE_ID),
        "observedGeneration": generation,
    }


def failed_status(
    body: Obj,
    reason: Reason,
    message: str,
    now: datetime.datetime,
    *,
    failure: Failure | None,
) -> Obj:
    """Ready=False with the reason. With ``failure`` the Issuing condition says when the
    next attempt is; without, that Signet waits for the spec or its inputs to change.
    Everything else in the status (what the current Secret holds) is kept as it is."""
    current = body.get("status") or {}
    previous = conditions_by_type(current)
    generation = generation_of(body)
    desired: Obj = {k: v for k, v in current.items() if k not in ("conditions", "nextRetryTime")}
    issuing = None
    if failure is not None:
        desired["failedIssuanceAttempts"] = failure.attempts
        desired["lastFailureTime"] = timestamp_or_none(now)
        desired["nextRetryTime"] = timestamp_or_none(failure.next_retry)
        issuing = condition(
            "Issuing",
            "True",
            reason,
            f"attempt {failure.attempts} failed; retrying at {timestamp(failure.next_retry)}",
            generation=generation,
            previous=previous.get("Issuing"),
            now=now,
        )
    elif previous.get("Issuing"):
        issuing = condition(
            "Issuing",
            "False",
            reason,
            "not retrying until the spec or its inputs change",
            generation=generation,
            previous=previous.get("Issuing"),
            now=now,
        )
    ready = condition(
        "Ready",
        "False",
        reason,
        message,
        generation=generation,
        previous=previous.get("Ready"),
        now=now,
    )
    desired["conditions"] = [ready, *([issuing] if issuing else [])]
    desired["observedGeneration"] = generation
    return desired


def still_valid_note(
    summary: SecretSummary | None, certificate: str, now: datetime.datetime
) -> str:
    """What a failure message adds when the current certificate keeps working meanwhile."""
    if (
        summary is not None
        and summary.problem is None
        and summary.certificate_name == certificate
        and summary.not_after
        and summary.not_after > now
    ):
        return f"; the current certificate stays valid until {timestamp_or_none(summary.not_after)}"
    return ""

"""CA rotation: a phase machine that moves an issuer from one key to the next without a
moment in which a peer meets a certificate it cannot verify.

A key change in the spec is not obeyed at once. The old key keeps signing while both
trust anchors are published everywhere Signet publishes trust (``Propagating``), long
enough for kubelets to refresh every mounted bundle; only then does the new key sign and
every leaf of the old one get replaced, paced (``Reissuing``); the old anchor stays until
the last leaf it signed is gone or expired, plus a grace (``Retiring``); then the issuer is
``Stable`` again on the new key. Going back to the old key during a rollover is a rollover
of its own in the other direction, without the propagation wait once both anchors are out.

Every phase is recorded in the issuer's status with the anchors of both keys, so a
restarted operator resumes where the last one was instead of starting over or, worse,
switching keys at once. This module only decides; `signet.controller.issuers` reads the
facts (what is published, how many old leaves remain) and writes the status.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from signet.api.issuer import RotationSettings
from signet.api.times import timestamp_or_none
from signet.reasons import Reason

PUBLISH_POLL = datetime.timedelta(seconds=1)
"""How soon to look again while bundles are still being written."""
REISSUE_POLL = datetime.timedelta(seconds=2)
"""How often the count of leaves still on the old key is refreshed while reissuing."""


class Phase(enum.StrEnum):
    STABLE = "Stable"
    PROPAGATING = "Propagating"
    REISSUING = "Reissuing"
    RETIRING = "Retiring"


@dataclass(frozen=True)
class Anchor:
    """What peers need to trust one key's leaves, kept in status so it outlives the
    process (and, for a CA Secret, the Secret's old contents)."""

    key_version: str
    ca_bundle: str | None = None
    """PEM chain of the key's CA certificate, leaf-most first."""
    ssh_ca_line: str | None = None


@dataclass(frozen=True)
class Rollover:
    """A rollover in progress, as recorded in ``status.rotation``."""

    phase: Phase
    retiring: Anchor
    target: Anchor
    started_at: datetime.datetime
    phase_since: datetime.datetime
    trust_published_at: datetime.datetime | None = None
    leaves: int | None = None
    """Leaves on the retiring key when reissuing began: the m of "Reissuing n/m"."""
    remaining: int | None = None
    retire_after: datetime.datetime | None = None

    @property
    def signing_key(self) -> str:
        """The old key signs until trust in the new one has propagated."""
        if self.phase is Phase.PROPAGATING:
            return self.retiring.key_version
        return self.target.key_version

    @property
    def anchors(self) -> tuple[Anchor, Anchor]:
        """Signing anchor first: both are trusted for the whole rollover."""
        if self.phase is Phase.PROPAGATING:
            return (self.retiring, self.target)
        return (self.target, self.retiring)

    def progress(self) -> str:
        if self.phase is Phase.REISSUING and self.leaves is not None:
            done = self.leaves - (self.remaining if self.remaining is not None else self.leaves)
            return f"Reissuing {max(done, 0)}/{self.leaves}"
        return str(self.phase)


@dataclass(frozen=True)
class Facts:
    """What the controller knows when it asks; callables so each is looked up only for
    the key the phase needs."""

    now: datetime.datetime
    trust_published: Callable[[tuple[Anchor, ...]], bool]
    """Whether every bundle of the issuer holds exactly these anchors."""
    old_leaves: Callable[[str], int]
    """Leaves of the issuer's Certificates signed by a key version and not yet expired."""
    unreissuable_lifetime: datetime.timedelta = datetime.timedelta(0)
    """The longest pod certificate or CSR lifetime the issuer grants: those leaves are
    renewed by their requesters, not by Signet, so the old anchor outlives them."""
    certificates_known: bool = True
    """Whether every Certificate has been seen since this process started. Until then the
    two answers above may come from a partial picture (no leaves, no bundles to publish),
    and a restarted operator would call a rollover done that is not."""


@dataclass(frozen=True)
class Step:
    rollover: Rollover | None
    signing_key: str
    message: str
    transition: Reason | None = None
    """Set when the phase changed: the Event and audit record to write."""
    next_look: datetime.datetime | None = None

    @property
    def phase(self) -> Phase:
        return self.rollover.phase if self.rollover else Phase.STABLE

    @property
    def anchors(self) -> tuple[Anchor, ...]:
        return self.rollover.anchors if self.rollover else ()


def _at(when: datetime.datetime | None) -> str:
    return timestamp_or_none(when) or "?"


def step(
    recorded: Rollover | None,
    signing: Anchor | None,
    wanted: Anchor,
    settings: RotationSettings,
    facts: Facts,
    *,
    overlap: bool = True,
) -> Step:
    """The next state of an issuer whose status says ``recorded`` and ``signing`` (the
    key that signed last) and whose spec now names ``wanted``. ``overlap=False`` switches
    keys at once, as Signet did before rotation existed: only tests that show what the
    overlap prevents ask for it."""
    now = facts.now
    if recorded is None:
        if signing is None or signing.key_version == wanted.key_version:
            return Step(None, wanted.key_version, "stable")
        if not overlap:
            return Step(
                None,
                wanted.key_version,
                f"switched from {signing.key_version} at once: trust overlap disabled",
                Reason.ROTATION_COMPLETED,
            )
        started = Rollover(Phase.PROPAGATING, signing, wanted, now, now)
        return Step(
            started,
            signing.key_version,
            f"rotation to {wanted.key_version} started: publishing both trust anchors; "
            f"{signing.key_version} signs until they have propagated",
            Reason.ROTATION_STARTED,
            now,
        )
    if recorded.phase is Phase.PROPAGATING:
        return _propagating(recorded, wanted, settings, facts)
    if wanted.key_version == recorded.retiring.key_version:
        back = Rollover(
            Phase.REISSUING,
            retiring=recorded.target,
            target=wanted,
            started_at=now,
            phase_since=now,
            trust_published_at=now,
        )
        return Step(
            back,
            wanted.key_version,
            f"rolled back to {wanted.key_version}: both anchors stay published while leaves "
            f"of {recorded.target.key_version} are replaced",
            Reason.ROTATION_ROLLED_BACK,
            now,
        )
    queued = (
        f"; {wanted.key_version} waits for this rotation to finish"
        if wanted.key_version != recorded.target.key_version
        else ""
    )
    current = recorded if queued else replace(recorded, target=_fresh(recorded.target, wanted))
    if current.phase is Phase.REISSUING:
        return _reissuing(current, settings, facts, queued)
    return _retiring(current, facts, queued)


def _fresh(recorded: Anchor, wanted: Anchor) -> Anchor:
    """The wanted key's anchor as resolved now (its CA Secret may have been corrected)."""
    return wanted if wanted.key_version == recorded.key_version else recorded


def _propagating(
    recorded: Rollover, wanted: Anchor, settings: RotationSettings, facts: Facts
) -> Step:
    now = facts.now
    old = recorded.retiring.key_version
    if wanted.key_version == old:
        return Step(
            None,
            old,
            f"rolled back to {old} before any leaf was signed with {recorded.target.key_version}",
            Reason.ROTATION_ROLLED_BACK,
        )
    if wanted.key_version != recorded.target.key_version:
        restarted = Rollover(Phase.PROPAGATING, recorded.retiring, wanted, now, now)
        return Step(
            restarted,
            old,
            f"rotation retargeted to {wanted.key_version} before any leaf was signed with "
            f"{recorded.target.key_version}: publishing its anchor",
            Reason.ROTATION_STARTED,
            now,
        )
    current = replace(recorded, target=wanted)
    if not facts.certificates_known:
        return _unknown(current, old, facts)
    if not facts.trust_published(current.anchors):
        return Step(
            replace(current, trust_published_at=None),
            old,
            f"Propagating: publishing the anchors of {old} and {wanted.key_version}",
            next_look=now + PUBLISH_POLL,
        )
    published = current.trust_published_at or now
    current = replace(current, trust_published_at=published)
    reissue_at = published + settings.trust_propagation
    if now < reissue_at:
        return Step(
            current,
            old,
            f"Propagating: both anchors published at {_at(published)}; {wanted.key_version} "
            f"signs from {_at(reissue_at)}",
            next_look=reissue_at,
        )
    leaves = facts.old_leaves(old)
    reissuing = replace(
        current, phase=Phase.REISSUING, phase_since=now, leaves=leaves, remaining=leaves
    )
    return Step(
        reissuing,
        wanted.key_version,
        f"{wanted.key_version} signs now; reissuing {leaves} leaves of {old} at up to "
        f"{settings.reissue_qps:g}/s",
        Reason.ROTATION_REISSUING,
        now,
    )


def _reissuing(recorded: Rollover, settings: RotationSettings, facts: Facts, queued: str) -> Step:
    now = facts.now
    old, new = recorded.retiring.key_version, recorded.target.key_version
    if not facts.certificates_known:
        return _unknown(recorded, new, facts)
    remaining = facts.old_leaves(old)
    leaves = recorded.leaves if recorded.leaves is not None else remaining
    current = replace(recorded, leaves=max(leaves, remaining), remaining=remaining)
    if remaining:
        return Step(
            current,
            new,
            f"{current.progress()} leaves of {old} replaced{queued}",
            next_look=now + REISSUE_POLL,
        )
    retire_after = max(now + settings.grace, recorded.phase_since + facts.unreissuable_lifetime)
    retiring = replace(current, phase=Phase.RETIRING, phase_since=now, retire_after=retire_after)
    return Step(
        retiring,
        new,
        f"every leaf of {old} replaced; its anchor stays published until {_at(retire_after)}"
        f"{queued}",
        Reason.ROTATION_RETIRING,
        retire_after,
    )


def _unknown(recorded: Rollover, signing_key: str, facts: Facts) -> Step:
    """The phase as recorded, looked at again once the Certificates may have been listed."""
    return Step(
        recorded,
        signing_key,
        f"{recorded.phase}: waiting for every Certificate to be listed",
        next_look=facts.now + PUBLISH_POLL,
    )


def _retiring(recorded: Rollover, facts: Facts, queued: str) -> Step:
    now = facts.now
    old, new = recorded.retiring.key_version, recorded.target.key_version
    retire_after = recorded.retire_after or now
    if now < retire_after:
        return Step(
            recorded,
            new,
            f"Retiring: the anchor of {old} is withdrawn at {_at(retire_after)}{queued}",
            next_look=retire_after,
        )
    return Step(
        None,
        new,
        f"rotation from {old} to {new} completed: only {new} is trusted now{queued}",
        Reason.ROTATION_COMPLETED,
        now if queued else None,
    )


# -- status ----------------------------------------------------------------------------


def _anchor_status(anchor: Anchor) -> dict[str, Any]:
    out: dict[str, Any] = {"keyVersion": anchor.key_version}
    if anchor.ca_bundle:
        out["caBundle"] = anchor.ca_bundle
    if anchor.ssh_ca_line:
        out["sshCAPublicKey"] = anchor.ssh_ca_line
    return out


def to_status(rollover: Rollover) -> dict[str, Any]:
    """``status.rotation``; absent keys are absent, never null."""
    out: dict[str, Any] = {
        "phase": str(rollover.phase),
        "progress": rollover.progress(),
        "from": _anchor_status(rollover.retiring),
        "to": _anchor_status(rollover.target),
        "startedAt": timestamp_or_none(rollover.started_at),
        "phaseSince": timestamp_or_none(rollover.phase_since),
    }
    optional = {
        "trustPublishedAt": timestamp_or_none(rollover.trust_published_at),
        "leaves": rollover.leaves,
        "remaining": rollover.remaining,
        "retireAfter": timestamp_or_none(rollover.retire_after),
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    return out


def _time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _anchor(raw: object) -> Anchor | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("keyVersion"), str):
        return None
    bundle, line = raw.get("caBundle"), raw.get("sshCAPublicKey")
    return Anchor(
        raw["keyVersion"],
        bundle if isinstance(bundle, str) else None,
        line if isinstance(line, str) else None,
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def from_status(status: Mapping[str, Any] | None) -> Rollover | None:
    """The rollover recorded in ``status.rotation``; None for none, or for a record too
    damaged to follow (then the issuer is treated as stable on what signed last)."""
    raw = (status or {}).get("rotation")
    if not isinstance(raw, Mapping):
        return None
    try:
        phase = Phase(str(raw.get("phase")))
    except ValueError:
        return None
    retiring, target = _anchor(raw.get("from")), _anchor(raw.get("to"))
    started, since = _time(raw.get("startedAt")), _time(raw.get("phaseSince"))
    if phase is Phase.STABLE or retiring is None or target is None or not started or not since:
        return None
    return Rollover(
        phase,
        retiring,
        target,
        started,
        since,
        trust_published_at=_time(raw.get("trustPublishedAt")),
        leaves=_count(raw.get("leaves")),
        remaining=_count(raw.get("remaining")),
        retire_after=_time(raw.get("retireAfter")),
    )


def signing_anchor(status: Mapping[str, Any] | None) -> Anchor | None:
    """The key that signed last, from the top of the status (written by every resolve)."""
    status = status or {}
    key = status.get("keyVersion")
    if not isinstance(key, str) or not key:
        return None
    bundle, line = status.get("caBundle"), status.get("sshCAPublicKey")
    return Anchor(
        key, bundle if isinstance(bundle, str) else None, line if isinstance(line, str) else None
    )

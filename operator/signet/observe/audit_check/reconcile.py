"""`signet audit reconcile`: does every KMS signature have its Signet record, and every
record its KMS signature?"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from signet.observe.audit import (
    SIGNATURE,
)
from signet.observe.audit_check.lines import Location

DEFAULT_TOLERANCE = 30.0
"""Seconds a Signet record may come after the KMS log entry of the same signature."""

DEFAULT_SKEW = 1.0
"""Seconds a Signet record may seem to come *before* its KMS log entry: the two clocks
differ (the record itself is written after KMS answered)."""


Located = tuple[Location, Mapping[str, Any]]


def _signature_json(
    time: datetime.datetime, key_version: str, location: Location | None
) -> dict[str, Any]:
    """What a report says of a signature on either side: when, with which key, where."""
    return {
        "time": time.isoformat(),
        "keyVersion": key_version,
        "location": None if location is None else str(location),
    }


@dataclass(frozen=True)
class KmsSignature:
    """A successful AsymmetricSign in the KMS data-access log."""

    time: datetime.datetime
    key_version: str
    entry: Mapping[str, Any]
    location: Location | None = None

    def to_json(self) -> dict[str, Any]:
        payload = self.entry.get("protoPayload")
        metadata = payload.get("requestMetadata") if isinstance(payload, Mapping) else None
        if not isinstance(metadata, Mapping):
            metadata = {}
        return {
            **_signature_json(self.time, self.key_version, self.location),
            "caller": metadata.get("callerIp"),
            "userAgent": metadata.get("callerSuppliedUserAgent"),
        }


@dataclass(frozen=True)
class SignetSignature:
    """A ``signet.dev/signature`` record."""

    time: datetime.datetime
    key_version: str
    record: Mapping[str, Any]
    location: Location | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **_signature_json(self.time, self.key_version, self.location),
            "seq": self.record.get("seq"),
            "outcome": self.record.get("outcome"),
            "certificate": self.record.get("certificate"),
            "serialNumber": self.record.get("serialNumber"),
        }


@dataclass(frozen=True)
class Match:
    """A KMS signature paired with the Signet record that accounts for it."""

    kms: KmsSignature
    signet: SignetSignature

    @property
    def delay(self) -> float:
        """Seconds from the KMS entry to the Signet record."""
        return (self.signet.time - self.kms.time).total_seconds()


@dataclass
class ReconcileResult:
    """Pairs, and what is left unpaired on either side."""

    matched: list[Match] = field(default_factory=list)
    unrecorded: list[KmsSignature] = field(default_factory=list)
    """Signatures KMS made that Signet has no record of: the failure this check is for."""
    unsigned: list[SignetSignature] = field(default_factory=list)
    """Signet records no KMS signature accounts for (a forged record, or the wrong KMS log
    or filters)."""
    invalid: list[str] = field(default_factory=list)
    """Signature records without a readable ``time`` or ``keyVersion``."""
    kms_signatures: int = 0
    signet_signatures: int = 0

    @property
    def ok(self) -> bool:
        return not (self.unrecorded or self.unsigned or self.invalid)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kmsSignatures": self.kms_signatures,
            "signetSignatures": self.signet_signatures,
            "matched": len(self.matched),
            "maxDelaySeconds": max((m.delay for m in self.matched), default=None),
            "unrecorded": [k.to_json() for k in self.unrecorded],
            "unsigned": [s.to_json() for s in self.unsigned],
            "invalid": list(self.invalid),
        }


def parse_time(value: object) -> datetime.datetime | None:
    """An ISO 8601 time as an aware datetime (naive ones are UTC); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def kms_signature(
    entry: Mapping[str, Any], location: Location | None = None
) -> KmsSignature | None:
    """The signature an audit log entry records, if it records one: an AsymmetricSign
    (the emulator names the full gRPC method) that succeeded (Cloud Logging leaves out a
    zero status)."""
    payload = entry.get("protoPayload")
    if not isinstance(payload, Mapping):
        return None
    method = payload.get("methodName")
    if not isinstance(method, str) or method.rsplit(".", 1)[-1] != "AsymmetricSign":
        return None
    status = payload.get("status") or {}
    if not isinstance(status, Mapping) or (status.get("code") or 0) != 0:
        return None
    resource = payload.get("resourceName")
    time = parse_time(entry.get("timestamp"))
    if not isinstance(resource, str) or time is None:
        return None
    return KmsSignature(time, resource, entry, location)


def reconcile(
    signet_records: Iterable[Mapping[str, Any] | Located],
    kms_entries: Iterable[Mapping[str, Any] | Located],
    *,
    key_prefix: str = "",
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    skew: float = DEFAULT_SKEW,
) -> ReconcileResult:
    """Pair Signet signature records one to one with KMS signatures of the same key version.

    There is no request id to join on, so pairs are made by time: a record is written just
    after KMS answered, so it pairs with a KMS signature from ``tolerance`` seconds before
    it to ``skew`` seconds after it. Each record takes the latest unpaired one not after it
    (else the earliest within ``skew``), unless pairing in strict time order pairs more,
    which then wins: the count is what matters, the choice among equals only names the
    right entries in the report.

    ``key_prefix`` and ``since``/``until`` leave out signatures of other keys and other
    times (a KMS log other clients also use); records up to ``tolerance`` outside the window
    still pair with ones inside it, so the window's edges do not report false gaps.
    """
    result = ReconcileResult()
    margin = datetime.timedelta(seconds=max(tolerance, skew))
    low = None if since is None else since - margin
    high = None if until is None else until + margin

    def wanted(key_version: str, time: datetime.datetime) -> bool:
        return (
            key_version.startswith(key_prefix)
            and (low is None or time >= low)
            and (high is None or time <= high)
        )

    kms: dict[str, list[KmsSignature]] = {}
    for item in kms_entries:
        location, entry = item if isinstance(item, tuple) else (None, item)
        found = kms_signature(entry, location)
        if found is not None and wanted(found.key_version, found.time):
            kms.setdefault(found.key_version, []).append(found)
    signet: dict[str, list[SignetSignature]] = {}
    for item in signet_records:
        location, record = item if isinstance(item, tuple) else (None, item)
        if record.get("kind") != SIGNATURE:
            continue
        time, key_version = parse_time(record.get("time")), record.get("keyVersion")
        if time is None or not isinstance(key_version, str):
            where = f" at {location}" if location is not None else ""
            result.invalid.append(
                f"signature record seq {record.get('seq')}{where} has no readable time "
                "or keyVersion"
            )
            continue
        if wanted(key_version, time):
            signet.setdefault(key_version, []).append(
                SignetSignature(time, key_version, record, location)
            )

    def inside(time: datetime.datetime) -> bool:
        return (since is None or time >= since) and (until is None or time <= until)

    for key_version in sorted(kms.keys() | signet.keys()):
        ks = sorted(kms.get(key_version, []), key=lambda k: k.time)
        ss = sorted(signet.get(key_version, []), key=lambda s: s.time)
        pairs = _pair_nearest(ks, ss, tolerance, skew)
        strict = _pair_in_order(ks, ss, tolerance, skew)
        if len(strict) > len(pairs):
            pairs = strict
        paired_k = {k for k, _ in pairs}
        paired_s = {s for _, s in pairs}
        for k, s in sorted(pairs, key=lambda pair: ks[pair[0]].time):
            if inside(ks[k].time) or inside(ss[s].time):
                result.matched.append(Match(ks[k], ss[s]))
        result.unrecorded += [k for i, k in enumerate(ks) if i not in paired_k and inside(k.time)]
        result.unsigned += [s for i, s in enumerate(ss) if i not in paired_s and inside(s.time)]
        result.kms_signatures += sum(1 for k in ks if inside(k.time))
        result.signet_signatures += sum(1 for s in ss if inside(s.time))
    result.unrecorded.sort(key=lambda k: k.time)
    result.unsigned.sort(key=lambda s: s.time)
    return result


def _pair_nearest(
    ks: Sequence[KmsSignature], ss: Sequence[SignetSignature], tolerance: float, skew: float
) -> list[tuple[int, int]]:
    """Each record (in time order) takes the latest unpaired KMS signature not after it,
    else the earliest one within ``skew`` after it: right in the usual case, where a gap
    sits next to correctly paired neighbours."""
    window = datetime.timedelta(seconds=tolerance)
    ahead = datetime.timedelta(seconds=skew)
    pairs: list[tuple[int, int]] = []
    stack: list[int] = []  # unpaired KMS signatures not after the current record, oldest first
    next_k = 0
    for s, record in enumerate(ss):
        while next_k < len(ks) and ks[next_k].time <= record.time:
            stack.append(next_k)
            next_k += 1
        if stack and ks[stack[-1]].time < record.time - window:
            stack.clear()  # all older still: no later record can take them either
        if stack:
            pairs.append((stack.pop(), s))
        elif next_k < len(ks) and ks[next_k].time <= record.time + ahead:
            pairs.append((next_k, s))
            next_k += 1
    return pairs


def _pair_in_order(
    ks: Sequence[KmsSignature], ss: Sequence[SignetSignature], tolerance: float, skew: float
) -> list[tuple[int, int]]:
    """Each record (in time order) takes the earliest unpaired KMS signature in its window:
    as many pairs as any pairing can make, since all windows have the same width."""
    window = datetime.timedelta(seconds=tolerance)
    ahead = datetime.timedelta(seconds=skew)
    times = [k.time for k in ks]
    pairs: list[tuple[int, int]] = []
    next_k = 0
    for s, record in enumerate(ss):
        next_k = max(next_k, bisect.bisect_left(times, record.time - window))
        if next_k < len(ks) and ks[next_k].time <= record.time + ahead:
            pairs.append((next_k, s))
            next_k += 1
    return pairs


def format_reconcile(result: ReconcileResult) -> str:
    """The human report of :func:`reconcile`."""
    delays = [m.delay for m in result.matched]
    out = [
        f"{'OK' if result.ok else 'MISMATCH'}: {len(result.matched)} pair(s) of "
        f"{result.kms_signatures} KMS signature(s) and {result.signet_signatures} Signet "
        "signature record(s)"
        + (f"; record written {max(delays):.3f} s after KMS at most" if delays else "")
    ]
    if result.unrecorded:
        out.append(f"KMS signatures with no Signet record ({len(result.unrecorded)}):")
        for k in result.unrecorded:
            facts = k.to_json()
            out.append(
                f"  {facts['time']}  {k.key_version}  at {facts['location']}  "
                f"caller {facts['caller']} {facts['userAgent']}"
            )
    if result.unsigned:
        out.append(f"Signet records with no KMS signature ({len(result.unsigned)}):")
        for s in result.unsigned:
            facts = s.to_json()
            certificate = facts["certificate"]
            what = (
                f"{certificate.get('namespace')}/{certificate.get('name')}"
                if isinstance(certificate, Mapping)
                else "-"
            )
            out.append(
                f"  {facts['time']}  {s.key_version}  at {facts['location']}  "
                f"seq {facts['seq']} {facts['outcome']} {what} serial {facts['serialNumber']}"
            )
    out += [f"invalid: {problem}" for problem in result.invalid]
    return "\n".join(out)

"""Checks of the audit trail: is the chain intact, and does every signature Cloud KMS made
have its Signet record (and every record its KMS signature)?

Pure functions over lines and parsed records, so the CLI, the tests and anyone's own
tooling share one reading of the chain rules written down in :mod:`signet.observe.audit`.

``verify`` stops at the first break and names it as precisely as the neighbouring records
allow: a record changed after it was written, records removed, records out of order, a
record that is not part of the chain, or a line that is not a record at all. Breaks it
cannot see are the ones no unkeyed hash chain can: a cut tail, or a rewrite of everything
from some point on. ``reconcile`` covers the first against the KMS log; shipping records
off the host as they are written covers the second.
"""

from __future__ import annotations

import bisect
import datetime
import json
import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from signet.observe.audit import (
    CHAIN_START,
    GENESIS,
    SIGNATURE,
    is_record,
    parse_record,
    record_hash,
)

LOOKAHEAD = 4096
"""Records read past a break to tell a reordering from a removal or an insertion, and
records remembered behind the current one to recognise copies."""

DEFAULT_TOLERANCE = 30.0
"""Seconds a Signet record may come after the KMS log entry of the same signature."""

DEFAULT_SKEW = 1.0
"""Seconds a Signet record may seem to come *before* its KMS log entry: the two clocks
differ (the record itself is written after KMS answered)."""


# -- lines -------------------------------------------------------------------------------


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


# -- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""

    problem: str
    """``malformed``, ``changed``, ``removed``, ``reordered`` or ``inserted``."""
    location: Location
    seq: int | None
    message: str
    related: Location | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "location": str(self.location),
            "seq": self.seq,
            "message": self.message,
            "related": None if self.related is None else str(self.related),
        }


@dataclass(frozen=True)
class ChainStart:
    """A chain-start record: a new chain (``linked`` false) or a recovery inside one."""

    location: Location
    seq: int
    reason: str
    message: str
    linked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "location": str(self.location),
            "seq": self.seq,
            "reason": self.reason,
            "message": self.message,
            "linked": self.linked,
        }


@dataclass
class VerifyResult:
    """What `verify` found: the first break, or notices about an unbroken chain."""

    records: int = 0
    """Records checked (up to the break, if any)."""
    first: Location | None = None
    first_seq: int | None = None
    last: Location | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    """Of the last record that checked out: what the next one must link to."""
    chain_starts: list[ChainStart] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Things a reviewer should know that do not break the chain."""
    problem: Break | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first": None if self.first is None else str(self.first),
            "firstSeq": self.first_seq,
            "last": None if self.last is None else str(self.last),
            "lastSeq": self.last_seq,
            "lastHash": self.last_hash,
            "chainStarts": [c.to_json() for c in self.chain_starts],
            "notices": list(self.notices),
            "break": None if self.problem is None else self.problem.to_json(),
        }


@dataclass(frozen=True)
class _Entry:
    location: Location
    record: dict[str, Any]
    hash: str

    @property
    def seq(self) -> int:
        seq: int = self.record["seq"]
        return seq

    @property
    def prev(self) -> str:
        prev: str = self.record["prev"]
        return prev

    @property
    def kind(self) -> str:
        kind: str = self.record["kind"]
        return kind

    @property
    def genesis(self) -> bool:
        return self.kind == CHAIN_START and self.seq == 1 and self.prev == GENESIS

    def follows(self, other: _Entry) -> bool:
        return self.seq == other.seq + 1 and self.prev == other.hash


@dataclass(frozen=True)
class _Bad:
    location: Location
    reason: str
    terminated: bool
    """Whether the line ends with a newline: a write cut short does not."""


def _items(lines: Iterable[str | Line]) -> Iterator[_Entry | _Bad]:
    numbered = 0
    for line in lines:
        if isinstance(line, str):
            numbered += 1
            line = Line(Location("<input>", numbered), line)
        text = line.text.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError as error:
            yield _Bad(line.location, f"not JSON ({error})", line.text.endswith("\n"))
            continue
        if not is_record(value):
            yield _Bad(
                line.location,
                "not an audit record (no seq, prev and kind)",
                line.text.endswith("\n"),
            )
            continue
        yield _Entry(line.location, value, record_hash(value))


class _Stream:
    """The items with a lookahead that is only filled far when a break needs it."""

    def __init__(self, items: Iterator[_Entry | _Bad]) -> None:
        self._items = items
        self._buffer: deque[_Entry | _Bad] = deque()

    def next(self) -> _Entry | _Bad | None:
        if self._buffer:
            return self._buffer.popleft()
        return next(self._items, None)

    def _fill(self, count: int) -> None:
        while len(self._buffer) < count:
            item = next(self._items, None)
            if item is None:
                return
            self._buffer.append(item)

    def peek_entry(self) -> _Entry | None:
        """The next record, past any unreadable lines before it."""
        index = 0
        while True:
            self._fill(index + 1)
            if index >= len(self._buffer):
                return None
            item = self._buffer[index]
            if isinstance(item, _Entry):
                return item
            index += 1

    def ahead(self) -> list[_Entry]:
        """Upcoming records of the current chain (up to the next new chain)."""
        self._fill(LOOKAHEAD)
        found: list[_Entry] = []
        for item in self._buffer:
            if isinstance(item, _Entry):
                if item.genesis:
                    break
                found.append(item)
        return found


class _Seen:
    """Recent records by hash and by seq, bounded so a long trail costs constant memory."""

    def __init__(self) -> None:
        self.by_hash: OrderedDict[str, Location] = OrderedDict()
        self.by_seq: OrderedDict[int, Location] = OrderedDict()

    def add(self, entry: _Entry) -> None:
        self.by_hash[entry.hash] = entry.location
        self.by_seq[entry.seq] = entry.location
        for index in (self.by_hash, self.by_seq):
            while len(index) > LOOKAHEAD:
                index.popitem(last=False)

    def new_chain(self) -> None:
        self.by_seq.clear()


def verify(lines: Iterable[str | Line]) -> VerifyResult:
    """Check the chain over ``lines`` (several files: concatenate them in order).

    A last line cut short (a crash mid-write, or a file still being written) is a notice,
    as are unreadable lines that a chain-start record right after them accounts for.
    """
    result = VerifyResult()
    stream = _Stream(_items(lines))
    seen = _Seen()
    before: _Entry | None = None  # the record before ``last``
    last: _Entry | None = None
    unreadable: list[_Bad] = []
    while (item := stream.next()) is not None:
        if isinstance(item, _Bad):
            unreadable.append(item)
            continue
        entry = item
        if unreadable:
            if not _explains(entry, last, unreadable):
                bad = unreadable[0]
                result.problem = Break("malformed", bad.location, None, bad.reason)
                return result
            result.notices.append(
                f"{_span(unreadable)} not part of the chain; the chain-start at "
                f"{entry.location} accounts for it (a crash mid-write)"
            )
            unreadable = []
        if last is None:
            result.first, result.first_seq = entry.location, entry.seq
            if not entry.genesis:
                result.notices.append(
                    f"the trail given starts at seq {entry.seq} ({entry.location}): the "
                    "records before it were not given, so nothing vouches for that one"
                )
        elif not entry.follows(last):
            problem = _classify(before, last, entry, stream, seen)
            if problem is not None:
                result.problem = problem
                return result
            seen.new_chain()
            result.notices.append(
                f"a new chain starts at {entry.location} after seq {last.seq} at {last.location}"
            )
        if entry.kind == CHAIN_START:
            result.chain_starts.append(
                ChainStart(
                    entry.location,
                    entry.seq,
                    str(entry.record.get("reason", "")),
                    str(entry.record.get("message", "")),
                    linked=not entry.genesis,
                )
            )
        result.records += 1
        result.last, result.last_seq, result.last_hash = entry.location, entry.seq, entry.hash
        seen.add(entry)
        before, last = last, entry
    if len(unreadable) == 1 and not unreadable[0].terminated:
        result.notices.append(
            f"{_span(unreadable)} not a complete record at the end of the trail (a write in "
            "progress, or a crash mid-write); a cut tail cannot be told from removed records"
        )
    elif unreadable:
        bad = unreadable[0]
        result.problem = Break("malformed", bad.location, None, bad.reason)
    if result.records == 0 and result.problem is None:
        result.notices.append("no audit records")
    return result


def _span(bad: Sequence[_Bad]) -> str:
    if len(bad) == 1:
        return f"line {bad[0].location} is"
    return f"lines {bad[0].location} .. {bad[-1].location} are"


def _explains(entry: _Entry, last: _Entry | None, unreadable: Sequence[_Bad]) -> bool:
    """Whether a chain-start accounts for the unreadable lines before it: it links to the
    record before them (the writer found the damage and kept the chain), or they end one
    file and it begins the next (the process crashed, then came back to a new file)."""
    if entry.kind != CHAIN_START:
        return False
    if last is not None and entry.follows(last):
        return True
    return unreadable[-1].location.source != entry.location.source


def _classify(
    before: _Entry | None, last: _Entry, entry: _Entry, stream: _Stream, seen: _Seen
) -> Break | None:
    """Why ``entry`` does not follow ``last``; None when it starts a new chain."""
    following = stream.peek_entry()
    links_last = following is not None and following.prev == last.hash
    if entry.genesis and not links_last:
        return None
    if following is not None and links_last:
        # ``entry`` sits between ``last`` and the record that follows ``last``.
        ahead = stream.ahead()
        copy_of = seen.by_hash.get(entry.hash) or next(
            (a.location for a in ahead if a.hash == entry.hash), None
        )
        if copy_of is not None:
            return Break(
                "inserted",
                entry.location,
                entry.seq,
                f"a copy of the record at {copy_of} was inserted: seq {following.seq} at "
                f"{following.location} follows seq {last.seq} at {last.location} directly",
                related=copy_of,
            )
        if _belongs_elsewhere(entry, ahead, seen):
            return Break(
                "reordered",
                entry.location,
                entry.seq,
                f"seq {entry.seq} is out of place: seq {following.seq} at "
                f"{following.location} follows seq {last.seq} at {last.location} directly",
                related=following.location,
            )
        return Break(
            "inserted",
            entry.location,
            entry.seq,
            f"this record is not part of the chain: seq {following.seq} at "
            f"{following.location} follows seq {last.seq} at {last.location} directly",
            related=following.location,
        )
    if before is not None and entry.prev == before.hash:
        return Break(
            "inserted",
            last.location,
            last.seq,
            f"this record is not part of the chain: seq {entry.seq} at {entry.location} "
            f"follows seq {before.seq} at {before.location} directly",
            related=entry.location,
        )
    if entry.seq == last.seq + 1:
        # One edit to ``entry`` explains both mismatches; else ``last`` was the one edited.
        if (
            following is not None
            and following.seq == entry.seq + 1
            and following.prev != entry.hash
        ):
            return Break(
                "changed",
                entry.location,
                entry.seq,
                f"seq {entry.seq} was changed after it was written: it does not link to "
                f"seq {last.seq} at {last.location}, nor does seq {following.seq} at "
                f"{following.location} link to it",
            )
        return Break(
            "changed",
            last.location,
            last.seq,
            f"seq {last.seq} was changed after it was written: its hash is not the prev "
            f"of seq {entry.seq} at {entry.location}",
            related=entry.location,
        )
    if following is not None and following.seq == last.seq + 2 and following.prev != entry.hash:
        return Break(
            "changed",
            entry.location,
            entry.seq,
            f"the record where seq {last.seq + 1} belongs says seq {entry.seq} and seq "
            f"{following.seq} at {following.location} does not link to it: changed after it "
            "was written",
        )
    if entry.seq > last.seq + 1:
        for later in stream.ahead():
            if last.seq < later.seq < entry.seq:
                return Break(
                    "reordered",
                    entry.location,
                    entry.seq,
                    f"seq {later.seq} is at {later.location}, after seq {entry.seq}; it "
                    f"belongs right after seq {last.seq} at {last.location}",
                    related=later.location,
                )
        missing = (
            f"seq {last.seq + 1}"
            if entry.seq == last.seq + 2
            else f"seq {last.seq + 1} .. {entry.seq - 1}"
        )
        return Break(
            "removed",
            entry.location,
            entry.seq,
            f"{missing} missing between seq {last.seq} at {last.location} and seq "
            f"{entry.seq} at {entry.location}",
            related=last.location,
        )
    copy_of = seen.by_hash.get(entry.hash)
    if copy_of is not None:
        return Break(
            "inserted",
            entry.location,
            entry.seq,
            f"a copy of the record at {copy_of} was inserted",
            related=copy_of,
        )
    same_seq = seen.by_seq.get(entry.seq)
    return Break(
        "inserted",
        entry.location,
        entry.seq,
        f"seq {entry.seq} after seq {last.seq} at {last.location}: seq only grows in a chain"
        + (f" (seq {entry.seq} is at {same_seq})" if same_seq is not None else ""),
        related=same_seq,
    )


def _belongs_elsewhere(entry: _Entry, ahead: Sequence[_Entry], seen: _Seen) -> bool:
    """Whether a record out of place is a genuine one of this chain (something links to
    it, or it links to something) rather than one that was never part of it."""
    if entry.prev in seen.by_hash:
        return True
    return any(a.hash == entry.prev or a.prev == entry.hash for a in ahead)


# -- reconcile ---------------------------------------------------------------------------

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


# -- reports -----------------------------------------------------------------------------


def format_verify(result: VerifyResult) -> str:
    """The human report of :func:`verify`."""
    if result.problem is None:
        if result.records:
            out = [
                f"OK: {result.records} record(s), seq {result.first_seq} at {result.first} "
                f"to seq {result.last_seq} at {result.last}"
            ]
        else:
            out = ["OK: nothing to check"]
    else:
        problem = result.problem
        seq = "" if problem.seq is None else f" (seq {problem.seq})"
        out = [
            f"BROKEN at {problem.location}{seq}: {problem.problem}: {problem.message}",
            f"{result.records} record(s) before it check out",
        ]
    for start in result.chain_starts:
        kind = "recovery" if start.linked else "new chain"
        out.append(
            f"chain-start at {start.location} (seq {start.seq}, {kind}): {start.reason}: "
            f"{start.message}"
        )
    out += [f"note: {notice}" for notice in result.notices]
    return "\n".join(out)


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

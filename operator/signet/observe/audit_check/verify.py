"""`signet audit verify`: is the hash chain intact, and if not, where and how it broke."""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from signet.observe.audit import (
    CHAIN_START,
    GENESIS,
    is_record,
    record_hash,
)
from signet.observe.audit_check.lines import Line, Location

LOOKAHEAD = 4096
"""Records read past a break to tell a reordering from a removal or an insertion, and
records remembered behind the current one to recognise copies."""


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

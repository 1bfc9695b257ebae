"""A hash-chained audit trail: one record per KMS signature and what became of it.

Cloud KMS already logs that a key was used; this says what for: which Certificate of
which namespace got which serial, names and validity, signed by which key version, and
whether the certificate reached its Secret. Records carry fingerprints of public keys, never
key material (callers pass only those), so the stream can be shipped anywhere.

Each record names its position (``seq``) and the SHA-256 of the record before it
(``prev``), so a record changed, removed, reordered or inserted after it was written shows
up in ``signet audit verify``; ``signet audit reconcile`` then proves that every signature
KMS made has its record. The chain is tamper-evident, not tamper-proof: whoever can rewrite
the file can recompute every hash after the point they edit, and can cut its tail. Shipping
records off the host as they are written is what turns the chain into evidence.

Chain rules (``audit_check`` relies on them):

* ``prev`` of a record is :func:`record_hash` of the record before it in the same chain.
* A chain begins with a ``signet.dev/chain-start`` record at ``seq`` 1 whose ``prev`` is
  :data:`GENESIS`: a new or empty file, or no file at all (each process's stdout stream is
  then a chain of its own).
* A process that finds an existing file continues its chain from the last complete record.
  When bytes follow that record (a crash mid-write), it ends the partial line and writes a
  chain-start that *links* to the last record (``seq`` + 1, its hash as ``prev``) and names
  it in ``lastSeq``/``lastHash``, so nothing before the damage is lost from the chain.
* When the file at the path is replaced (rotated by rename, or deleted), the chain carries
  on in the new file behind a linked chain-start; verify the files in order to check it
  across the boundary. Rotation by copy and truncate can lose records written in between.
* One process writes a file: two writers would each continue the chain from where they
  think it ends, and the file would read as tampered with.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TypeGuard

logger = logging.getLogger("signet.audit")
"""The audit stream itself: every record, one canonical JSON line per log message."""

log = logging.getLogger(__name__)
"""Trouble with the audit file; kept apart so the audit stream holds records only."""

SIGNATURE = "signet.dev/signature"
DELIVERY = "signet.dev/delivery"
KEY = "signet.dev/key"
CHAIN_START = "signet.dev/chain-start"

GENESIS = "0" * 64
"""``prev`` of the first record of a chain."""

CHAIN_FIELDS = frozenset({"time", "kind", "seq", "prev"})

_TAIL_BLOCK = 64 * 1024
_TAIL_LIMIT = 4 * 1024 * 1024
"""How far back from the end of an existing file to look for the last complete record;
records are a few KiB at most, so failing to find one this far back means the file is not
an audit file (or is badly damaged) and a fresh chain is the honest answer."""


def canonical(record: Mapping[str, Any]) -> str:
    """The one serialisation that is written and hashed, so a verifier that parses a line
    (even one a log shipper re-encoded) recomputes the same hash."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """What the next record's ``prev`` must be."""
    return hashlib.sha256(canonical(record).encode("utf-8")).hexdigest()


def is_record(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether a parsed JSON value has what the chain needs of a record."""
    return (
        isinstance(value, dict)
        and type(value.get("seq")) is int
        and isinstance(value.get("prev"), str)
        and isinstance(value.get("kind"), str)
    )


def parse_record(line: str | bytes) -> dict[str, Any] | None:
    """The record on ``line``, or None when the line is not one (partial, foreign)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if is_record(value) else None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class AuditLog:
    """Writes each record to the ``signet.audit`` logger and, optionally, appends it to a
    file (JSON lines) that a log shipper can tail.

    Safe to call from the event loop and from threads at once: a lock keeps ``seq`` order,
    file order and log order the same. A record is in the file (flushed to the kernel, not
    fsynced: a node crash can lose the last records, a process crash cannot) before the
    call returns.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._seq = 0
        self._prev = GENESIS
        self._reopen_reason = "FileReplaced"
        self.file_errors = 0
        """Failed appends to the file; each record is still on the log stream."""
        with self._lock:
            if path is None:
                self._start(
                    "NoFile", "no audit file: this chain lives in the signet.audit log only"
                )
            else:
                self._open_existing(path)

    # -- public API -------------------------------------------------------------------

    def signature(self, **fields: Any) -> str:
        """Record one KMS signature; the returned id (the record's hash, unique in the
        chain) is what the delivery record of the same certificate points at."""
        return self._write(SIGNATURE, fields)[1]

    def delivery(self, signature: str, **fields: Any) -> None:
        """Record what became of a signed certificate (written to its Secret or not, and
        why), so a signature without a delivered certificate is explained."""
        self._write(DELIVERY, {"signature": signature, **fields})

    def spent(self, signature: str | None, error: BaseException, **subject: Any) -> None:
        """Record that a signature was spent on a certificate that could not be built
        (``kmskey.SignatureSpentError``), so that signature too has its explanation.
        ``None`` is a signature whose own record could not be written: there is no record
        to attach this one to."""
        if signature is not None:
            self.delivery(
                signature, outcome="discarded", reason="BuildFailed", message=str(error), **subject
            )

    def key_event(self, **fields: Any) -> None:
        """Record a fact Signet observed about a KMS key (first use of a key version, a
        key disabled or destroyed), next to the signatures it affects."""
        self._write(KEY, fields)

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The writer the others share, for kinds they do not cover; returns the record
        (its own hash is what the next record's ``prev`` holds)."""
        return self._write(kind, fields)[0]

    def close(self) -> None:
        """Close the file; a record written after this reopens it."""
        with self._lock:
            self._close_file()
            self._reopen_reason = "Reopened"

    @property
    def last(self) -> tuple[int, str]:
        """``seq`` and hash of the last record written: where the next one links."""
        with self._lock:
            return self._seq, self._prev

    # -- writing ----------------------------------------------------------------------

    def _write(self, kind: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        clash = CHAIN_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"audit fields {sorted(clash)} are set by the chain itself")
        with self._lock:
            if self._path is not None and not self._file_is_current():
                self._reopen(self._path)
            return self._append(kind, fields)

    def _append(self, kind: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """Must hold the lock.

        A failed file write does not raise: the signature it records is already spent and
        the record is on the log stream, so failing the caller would only make it sign
        again. The chain advances anyway; the next record reopens the file behind a
        ``WriteFailed`` chain-start, and the file's gap is there for a verifier to see.
        """
        entry: dict[str, Any] = {
            **fields,
            "time": _now(),
            "kind": kind,
            "seq": self._seq + 1,
            "prev": self._prev,
        }
        line = canonical(entry)
        digest = hashlib.sha256(line.encode("utf-8")).hexdigest()
        self._seq, self._prev = entry["seq"], digest
        logger.info("%s", line)
        if self._fh is not None:
            try:
                self._fh.write(line.encode("utf-8") + b"\n")
                self._fh.flush()
            except OSError:
                log.exception("appending to audit file %s failed", self._path)
                self.file_errors += 1
                self._close_file()
                self._reopen_reason = "WriteFailed"
        return entry, digest

    def _start(self, reason: str, message: str, **facts: Any) -> None:
        """Must hold the lock: the chain-start record (see the module docstring)."""
        self._append(
            CHAIN_START,
            {
                "reason": reason,
                "message": message,
                "file": None if self._path is None else str(self._path),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **facts,
            },
        )

    # -- the file ---------------------------------------------------------------------

    def _open_existing(self, path: Path) -> None:
        """Must hold the lock: continue the chain of the file at ``path``, if any."""
        self._open(path)
        if self._fh is None:
            self._reopen_reason = "OpenFailed"
            self._start("NoFile", f"cannot open {path}; the chain starts in the log only")
            return
        if self._identity is None:  # a pipe or device: nothing to read back
            self._start("NewFile", f"{path} is not a regular file; a new chain starts")
            return
        found, trailing = _last_record(path)
        if found is None:
            empty = os.fstat(self._fh.fileno()).st_size == 0
            self._start(
                "NewFile" if empty else "NoRecordFound",
                f"new audit file {path}"
                if empty
                else f"no complete audit record at the end of {path}; a new chain starts",
            )
            return
        self._seq, self._prev = found["seq"], record_hash(found)
        if not _ends_with_newline(self._fh.fileno()):
            self._fh.write(b"\n")  # end the partial line so the next record stands alone
            self._fh.flush()
        if trailing.strip():
            self._start(
                "DamagedTail",
                f"{len(trailing)} byte(s) after the last complete record of {path} "
                "(a crash mid-write?) are not part of the chain",
                lastSeq=self._seq,
                lastHash=self._prev,
            )

    def _reopen(self, path: Path) -> None:
        """Must hold the lock: the file at the path is not the one we hold (rotated,
        deleted, closed, or a failed write dropped it); the chain carries on in whatever
        file is there now."""
        self._close_file()
        self._open(path)
        if self._fh is None:
            return
        reason, self._reopen_reason = self._reopen_reason, "FileReplaced"
        if self._identity is not None and not _ends_with_newline(self._fh.fileno()):
            self._fh.write(b"\n")
        self._start(
            reason,
            _REOPEN_MESSAGES[reason].format(path=path),
            lastSeq=self._seq,
            lastHash=self._prev,
        )

    def _open(self, path: Path) -> None:
        try:
            self._fh = path.open("a+b")  # read too: the last byte tells a cut line
        except OSError:
            log.exception("cannot open audit file %s; records go to the log only", path)
            self._fh, self._identity = None, None
            return
        st = os.fstat(self._fh.fileno())
        self._identity = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None

    def _file_is_current(self) -> bool:
        """Whether the open file is still the one at the path: a stat per record, cheap
        next to the KMS call each record stands for."""
        if self._fh is None:
            return False
        if self._identity is None:
            return True
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def _close_file(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                log.exception("closing audit file %s failed", self._path)
            self._fh = None


_REOPEN_MESSAGES = {
    "FileReplaced": "{path} was replaced (rotated or deleted); the chain continues here",
    "Reopened": "{path} was closed and reopened; the chain continues here",
    "OpenFailed": "{path} could not be opened before; the chain continues here",
    "WriteFailed": "appending to {path} failed; the records after the last one in the file, "
    "up to lastSeq, are on the log stream only",
}


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _last_record(path: Path) -> tuple[dict[str, Any] | None, bytes]:
    """The last complete record of the file and the bytes after its line, reading only the
    end of the file (an audit file may be large) and parsing each line once."""
    with path.open("rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        buf = b""
        checked = 0  # complete lines, counted from the end, already tried
        tail_checked = False
        while pos > 0 and len(buf) < _TAIL_LIMIT:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            lines = buf.split(b"\n")
            # lines[0] is cut unless the buffer starts the file; lines[-1] is what follows
            # the final newline: empty, a partial line, or a record missing its newline.
            complete = lines[:-1] if pos == 0 else lines[1:-1]
            if not tail_checked and (pos == 0 or len(lines) > 1):
                tail_checked = True
                found = parse_record(lines[-1])
                if found is not None:
                    return found, b""
            for index in range(len(complete) - 1 - checked, -1, -1):
                found = parse_record(complete[index])
                if found is not None:
                    return found, b"\n".join([*complete[index + 1 :], lines[-1]])
            checked = len(complete)
    return None, b""

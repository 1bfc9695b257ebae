"""The audit log is a hash chain that survives restarts, crashes mid-write, rotation and
concurrent writers, and ``signet audit verify`` finds each kind of tampering where it is."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signet.observe.audit import CHAIN_START, GENESIS, AuditLog, canonical, record_hash
from signet.observe.audit_check import from_log, lines_of, read_lines, verify


class Collect(logging.Handler):
    """The ``signet.audit`` stream as a shipper reading stdout would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def stream() -> Iterator[Collect]:
    handler = Collect()
    audit_logger = logging.getLogger("signet.audit")
    level = audit_logger.level
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        audit_logger.removeHandler(handler)
        audit_logger.setLevel(level)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def signet_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signet.cli", "audit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write_trail(path: Path, count: int) -> list[str]:
    """A clean trail: a chain-start and ``count`` signature records; returns its lines."""
    audit = AuditLog(path)
    for i in range(count):
        audit.signature(keyVersion="projects/p/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", n=i)
    audit.close()
    return path.read_text().splitlines()


def test_records_are_canonical_chained_and_continue_after_a_restart(
    tmp_path: Path, stream: Collect
) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path)
    signature = first.signature(
        keyVersion="projects/p/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        certificate={"namespace": "shop", "name": "web"},
        subject="CN=caf\u00e9",
    )
    first.delivery(signature, outcome="written", secret="shop/web-tls")
    first.close()
    second = AuditLog(path)  # a restart
    second.key_event(event="Disabled", keyVersion="projects/p/k/cryptoKeyVersions/1")
    second.delivery(signature, outcome="not-written", reason="SecretWriteFailed")

    lines = path.read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    assert [r["seq"] for r in written] == [1, 2, 3, 4, 5]
    assert [r["kind"] for r in written] == [
        CHAIN_START,
        "signet.dev/signature",
        "signet.dev/delivery",
        "signet.dev/key",
        "signet.dev/delivery",
    ]
    assert written[0]["prev"] == GENESIS and written[0]["reason"] == "NewFile"
    for before, line, record in zip(lines, lines[1:], written[1:], strict=False):
        assert line == canonical(record)  # the line is the canonical form, nothing else
        assert record["prev"] == hashlib.sha256(before.encode()).hexdigest()
    assert signature == record_hash(written[1]) == written[2]["signature"]
    assert "caf\u00e9" in lines[1]  # not \u-escaped: the hash is over UTF-8
    parsed = datetime.datetime.fromisoformat(written[1]["time"])
    assert parsed.utcoffset() == datetime.timedelta(0)
    assert len(written[1]["time"].split(".")[1]) == len("123+00:00")  # milliseconds
    assert second.last == (5, record_hash(written[4]))
    assert stream.lines == lines  # the log stream carries the same lines in the same order

    result = verify(read_lines([path]))
    assert result.ok and result.records == 5 and result.last_seq == 5
    assert [c.reason for c in result.chain_starts] == ["NewFile"]
    cli = signet_audit("verify", str(path))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("OK: 5 record(s)")


def test_chain_fields_cannot_be_overridden(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="seq"):
        audit.record("signet.dev/signature", seq=7)
    with pytest.raises(ValueError, match="prev"):
        audit.signature(prev=GENESIS)
    assert len(records(tmp_path / "audit.jsonl")) == 1  # only the chain-start


def test_truncated_last_line_starts_a_linked_segment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 3)
    with path.open("ab") as out:  # a crash in the middle of writing a record
        out.write(b'{"keyVersion":"projects/p/ke')

    audit = AuditLog(path)
    audit.signature(keyVersion="projects/p/k/cryptoKeyVersions/1", n=3)

    lines = path.read_text().splitlines()
    assert lines[4] == '{"keyVersion":"projects/p/ke'  # kept as evidence, on a line of its own
    start, after = json.loads(lines[5]), json.loads(lines[6])
    last_good = json.loads(lines[3])
    assert start["kind"] == CHAIN_START and start["reason"] == "DamagedTail"
    assert start["lastSeq"] == last_good["seq"] == 4
    assert start["lastHash"] == record_hash(last_good) == start["prev"]
    assert start["seq"] == 5 and after["seq"] == 6 and after["prev"] == record_hash(start)

    result = verify(read_lines([path]))
    assert result.ok, result.problem
    assert result.records == 6
    assert [(c.reason, c.linked) for c in result.chain_starts] == [
        ("NewFile", False),
        ("DamagedTail", True),
    ]
    assert any(f"{path}:5" in notice for notice in result.notices)


def test_a_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 2)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    AuditLog(path).signature(keyVersion="k", n=2)
    written = records(path)
    assert [r["seq"] for r in written] == [1, 2, 3, 4]
    assert all(r["kind"] != CHAIN_START for r in written[1:])
    assert verify(read_lines([path])).ok


def test_the_tail_is_found_without_reading_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with path.open("wb") as out:  # a sparse GiB of zeros: reading it all would show
        out.truncate(1 << 30)
        out.seek(0, os.SEEK_END)
        out.write(b"\n")
    AuditLog(path).signature(keyVersion="k", n=0)
    with path.open("rb") as fh:
        fh.seek(-4096, os.SEEK_END)
        tail = fh.read().split(b"\n")[-3:-1]
    start, signature = (json.loads(line) for line in tail)
    assert start["reason"] == "NoRecordFound" and start["prev"] == GENESIS
    assert signature["seq"] == 2 and signature["prev"] == record_hash(start)
    audit = AuditLog(path)  # a restart finds the records after the junk
    audit.signature(keyVersion="k", n=1)
    assert audit.last[0] == 3


def test_a_file_without_records_starts_a_new_chain_that_verify_flags(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("this is not an audit file\n")
    AuditLog(path).signature(keyVersion="k", n=0)
    result = verify(read_lines([path]))
    assert not result.ok and result.problem is not None
    assert result.problem.problem == "malformed" and str(result.problem.location) == f"{path}:1"


def test_rotation_by_rename_and_deletion_continue_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.signature(keyVersion="k", n=0)
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate without "create"
    audit.signature(keyVersion="k", n=1)
    path.rename(tmp_path / "audit.jsonl.2")
    path.touch()  # logrotate "create"
    audit.signature(keyVersion="k", n=2)
    (tmp_path / "audit.jsonl.3").write_bytes(path.read_bytes())  # shipped, then deleted
    path.unlink()
    audit.signature(keyVersion="k", n=3)

    files = [tmp_path / n for n in ("audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3")] + [path]
    assert [len(records(f)) for f in files] == [2, 2, 2, 2]  # a chain-start, the record
    result = verify(read_lines(files))
    assert result.ok, result.problem
    assert result.records == 8 and not result.notices
    assert [(c.reason, c.linked) for c in result.chain_starts] == [
        ("NewFile", False),
        ("FileReplaced", True),
        ("FileReplaced", True),
        ("FileReplaced", True),
    ]
    alone = verify(read_lines([path]))  # the newest file on its own: anchored, noted
    assert alone.ok and alone.first_seq == 7 and "starts at seq 7" in alone.notices[0]
    lost = verify(read_lines([files[0], files[2], files[3]]))  # one file went missing
    assert lost.problem is not None and lost.problem.problem == "removed"
    assert str(lost.problem.location) == f"{files[2]}:1"
    assert "seq 3 .. 4 missing" in lost.problem.message


def test_without_a_file_each_process_stream_is_a_chain(stream: Collect) -> None:
    AuditLog().signature(keyVersion="k", n=0)
    AuditLog().signature(keyVersion="k", n=1)  # the next process
    first = json.loads(stream.lines[0])
    assert first["kind"] == CHAIN_START and first["reason"] == "NoFile"
    assert first["seq"] == 1 and first["prev"] == GENESIS and first["file"] is None
    result = verify(stream.lines)
    assert result.ok and result.records == 4
    assert [c.linked for c in result.chain_starts] == [False, False]
    assert any("a new chain starts" in n for n in result.notices)


def test_a_failed_file_write_does_not_raise_and_the_gap_is_named(
    tmp_path: Path, stream: Collect
) -> None:
    audit = AuditLog(Path("/dev/full"))  # every write fails with ENOSPC
    signature = audit.signature(keyVersion="k", n=0)
    audit.delivery(signature, outcome="written")
    assert audit.file_errors >= 2
    kinds = [json.loads(line)["kind"] for line in stream.lines]
    assert kinds[-1] == "signet.dev/delivery"
    assert json.loads(stream.lines[-2])["reason"] == "WriteFailed"
    assert verify(stream.lines).ok  # the log stream has every record


def test_operator_log_lines_carry_a_verifiable_trail(tmp_path: Path, stream: Collect) -> None:
    audit = AuditLog()
    for i in range(3):
        audit.signature(keyVersion="k", n=i)
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        for i, line in enumerate(stream.lines):
            out.write(json.dumps({"message": "Handler succeeded.", "severity": "info"}) + "\n")
            if i % 2:  # kopf's JSON format
                out.write(json.dumps({"message": line, "severity": "info"}) + "\n")
            else:  # its plain format
                out.write(f"[2026-11-26 23:48:13,482] signet.audit         [INFO    ] {line}\n")
    result = verify(from_log(read_lines([log])))
    assert result.ok and result.records == 4
    cli = signet_audit("verify", "--from-log", str(log))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert signet_audit("verify", str(log)).returncode == 1  # not an audit file as such


def test_concurrent_writers_keep_the_chain(tmp_path: Path, stream: Collect) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    ids: list[str] = []
    go = threading.Barrier(8)

    def work(worker: int) -> None:
        go.wait()
        for i in range(100):
            ids.append(audit.signature(keyVersion="k", worker=worker, n=i))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    written = records(path)
    assert [r["seq"] for r in written] == list(range(1, 802))
    assert len(set(ids)) == 800
    assert verify(read_lines([path])).ok
    assert stream.lines == path.read_text().splitlines()


# -- tampering --------------------------------------------------------------------------


def tampered(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "tampered.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def assert_break(path: Path, problem: str, line: int, seq: int | None, *words: str) -> None:
    result = verify(read_lines([path]))
    assert result.problem is not None, "no break found"
    found = result.problem
    assert (found.problem, str(found.location), found.seq) == (problem, f"{path}:{line}", seq), (
        found
    )
    for word in words:
        assert word in found.message, found.message
    cli = signet_audit("verify", str(path))
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"BROKEN at {path}:{line}" in cli.stdout
    as_json = signet_audit("verify", "--json", str(path))
    assert as_json.returncode == 1
    reported = json.loads(as_json.stdout)["break"]
    assert (reported["problem"], reported["location"]) == (problem, f"{path}:{line}")


@pytest.fixture
def trail(tmp_path: Path) -> list[str]:
    """Lines 1..8: the chain-start (seq 1) and signatures seq 2..8 (line n holds seq n)."""
    return write_trail(tmp_path / "audit.jsonl", 7)


def test_verify_finds_a_changed_record(tmp_path: Path, trail: list[str]) -> None:
    record = json.loads(trail[3])
    record["n"] = 99  # say, a serial number rewritten
    trail[3] = canonical(record)
    assert_break(tampered(tmp_path, trail), "changed", 4, 4, "seq 4 was changed")


def test_verify_finds_a_changed_record_whose_prev_was_fixed_up(
    tmp_path: Path, trail: list[str]
) -> None:
    record = json.loads(trail[3])
    record["n"], record["prev"] = 99, "f" * 64
    trail[3] = canonical(record)
    assert_break(tampered(tmp_path, trail), "changed", 4, 4, "seq 4 was changed")


def test_verify_finds_a_removed_record(tmp_path: Path, trail: list[str]) -> None:
    del trail[3]  # seq 4
    assert_break(tampered(tmp_path, trail), "removed", 4, 5, "seq 4 missing", "seq 3")


def test_verify_finds_removed_records_even_with_the_link_repaired(
    tmp_path: Path, trail: list[str]
) -> None:
    after = json.loads(trail[5])  # seq 6 now follows seq 3
    after["prev"] = record_hash(json.loads(trail[2]))
    trail[5] = canonical(after)
    del trail[3:5]
    assert_break(tampered(tmp_path, trail), "removed", 4, 6, "seq 4 .. 5 missing")


def test_verify_finds_swapped_records(tmp_path: Path, trail: list[str]) -> None:
    trail[3], trail[4] = trail[4], trail[3]
    assert_break(tampered(tmp_path, trail), "reordered", 4, 5, "out of place")


def test_verify_finds_a_record_moved_later(tmp_path: Path, trail: list[str]) -> None:
    moved = trail.pop(3)  # seq 4, now after seq 6
    trail.insert(5, moved)
    assert_break(tampered(tmp_path, trail), "reordered", 4, 5, "seq 4 is at", ":6")


def test_verify_finds_an_inserted_record_with_a_forged_link(
    tmp_path: Path, trail: list[str]
) -> None:
    previous = json.loads(trail[3])
    forged = {**previous, "n": 1000, "seq": previous["seq"] + 1, "prev": record_hash(previous)}
    trail.insert(4, canonical(forged))
    assert_break(tampered(tmp_path, trail), "inserted", 5, 5, "not part of the chain")


def test_verify_finds_an_inserted_record_without_a_link(tmp_path: Path, trail: list[str]) -> None:
    trail.insert(4, canonical({**json.loads(trail[3]), "n": 1000, "prev": "0" * 64}))
    assert_break(tampered(tmp_path, trail), "inserted", 5, 4, "not part of the chain")


def test_verify_finds_an_inserted_copy(tmp_path: Path, trail: list[str]) -> None:
    trail.insert(4, trail[1])  # seq 2 replayed after seq 4
    assert_break(tampered(tmp_path, trail), "inserted", 5, 2, "a copy of the record at")


def test_verify_finds_a_line_that_is_not_a_record(tmp_path: Path, trail: list[str]) -> None:
    trail[3] = "not json at all"
    assert_break(tampered(tmp_path, trail), "malformed", 4, None, "not JSON")


def test_verify_accepts_reencoded_lines_and_plain_strings(trail: list[str]) -> None:
    """A shipper that re-serialises JSON (spacing, key order) does not break the chain."""
    spaced = [json.dumps(dict(reversed(json.loads(line).items())), indent=None) for line in trail]
    assert spaced != trail
    assert verify(spaced).ok
    assert verify(lines_of(trail)).last_hash == verify(lines_of(spaced)).last_hash


def test_cli_usage_and_io_errors_exit_2(tmp_path: Path) -> None:
    missing = signet_audit("verify", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2 and "missing.jsonl" in missing.stderr
    assert signet_audit("verify").returncode == 2

"""The `signet` command: one entry point for the operator and the commands that serve it.

Subcommands import their modules lazily so `signet --help` stays fast and a missing
optional piece (say, the Go-built tools) only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from signet.observe import audit_check


class _AuditResult(Protocol):
    """What the audit subcommands report on: VerifyResult and ReconcileResult."""

    @property
    def ok(self) -> bool: ...

    def to_json(self) -> dict[str, Any]: ...


_Result = TypeVar("_Result", bound=_AuditResult)


def _kms_emulator(argv: Sequence[str]) -> int:
    from signet.kms.emulator import cli

    return cli.main(list(argv))


def _run(args: argparse.Namespace) -> int:
    from signet.controller import main

    return main.run(args)


def _status(args: argparse.Namespace) -> int:
    from signet.ops import commands

    return commands.status_command(args)


def _renew(args: argparse.Namespace) -> int:
    from signet.ops import commands

    return commands.renew_command(args)


def _inspect(args: argparse.Namespace) -> int:
    from signet.ops import commands

    return commands.inspect_command(args)


def _audit(
    args: argparse.Namespace,
    command: str,
    check: Callable[[Iterator[audit_check.Line]], _Result],
    render: Callable[[_Result], str],
) -> int:
    """What both audit subcommands share: the files read (or the audit lines embedded in a
    log), exit 2 when one cannot be read, a JSON or text report, exit 1 when not ok."""
    import json

    from signet.observe import audit_check

    lines = audit_check.read_lines(args.files)
    if args.from_log:
        lines = audit_check.from_log(lines)
    try:
        result = check(lines)
    except OSError as error:
        print(f"signet audit {command}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render(result))
    return 0 if result.ok else 1


def _audit_verify(args: argparse.Namespace) -> int:
    from signet.observe import audit_check

    return _audit(args, "verify", audit_check.verify, audit_check.format_verify)


def _audit_reconcile(args: argparse.Namespace) -> int:
    from signet.observe import audit_check

    def check(lines: Iterator[audit_check.Line]) -> audit_check.ReconcileResult:
        return audit_check.reconcile(
            audit_check.read_records(lines),
            audit_check.read_records(audit_check.read_lines(args.kms_log)),
            key_prefix=args.key_prefix,
            since=args.since,
            until=args.until,
            tolerance=args.tolerance,
            skew=args.skew,
        )

    return _audit(args, "reconcile", check, audit_check.format_reconcile)


def _iso_time(value: str) -> datetime.datetime:
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}")
    return seconds


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="check the audit trail (--audit-log files)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    def add_common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--from-log",
            action="store_true",
            help="the files are operator logs: take the signet.audit records out of them",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    verify = audit_commands.add_parser(
        "verify",
        help="check the hash chain; exit 1 at the first changed, removed, reordered or "
        "inserted record",
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    add_common(verify)
    verify.set_defaults(func=_audit_verify)

    reconcile = audit_commands.add_parser(
        "reconcile",
        help="pair signature records with the KMS data-access log; exit 1 if either side "
        "has one the other lacks",
    )
    reconcile.add_argument(
        "files", nargs="+", metavar="AUDITFILE", help="Signet audit files, oldest first"
    )
    reconcile.add_argument(
        "--kms-log",
        action="append",
        required=True,
        metavar="FILE",
        help="KMS data-access log (JSON lines, or a JSON array from Cloud Logging); repeatable",
    )
    reconcile.add_argument(
        "--key-prefix",
        default="",
        metavar="P",
        help="only key versions whose resource name starts with P",
    )
    reconcile.add_argument(
        "--since", type=_iso_time, metavar="ISO", help="only signatures at or after this time"
    )
    reconcile.add_argument(
        "--until", type=_iso_time, metavar="ISO", help="only signatures at or before this time"
    )
    reconcile.add_argument(
        "--tolerance",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds a record may come after its KMS log entry (default %(default)s)",
    )
    reconcile.add_argument(
        "--skew",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds a record may seem to come before its KMS log entry, for clocks that "
        "differ (default %(default)s)",
    )
    add_common(reconcile)
    reconcile.set_defaults(func=_audit_reconcile)


def _add_tool_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands for people working with Signet's objects: status, renew, inspect."""
    # The ops commands' flags live in a light module; their work is imported on use.
    from signet.ops import args as tool_args

    for name, help_text, add, func in (
        ("status", "Certificates and issuers at a glance", tool_args.add_status_arguments, _status),
        ("renew", "force re-issuance (like cmctl renew)", tool_args.add_renew_arguments, _renew),
        (
            "inspect",
            "decode what Signet wrote to a Secret",
            tool_args.add_inspect_arguments,
            _inspect,
        ),
    ):
        tool = commands.add_parser(name, help=help_text)
        add(tool)
        tool.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator")
    from signet.controller.main import add_arguments

    add_arguments(run)
    run.set_defaults(func=_run)

    _add_tool_commands(commands)
    _add_audit_commands(commands)

    commands.add_parser(
        "kms-emulator",
        help="a local server speaking the Cloud KMS gRPC API (see `signet kms-emulator -h`)",
        add_help=False,
    )
    return parser


def build_kubectl_parser() -> argparse.ArgumentParser:
    """``kubectl signet``: the user commands only (no ``run``, ``audit``, ``kms-emulator``).

    kubectl hands a plugin every argument after its name, so the connection flags are the
    plugin's own; like kubectl's, they may also come before the command
    (``kubectl signet -n NS status``).
    """
    from signet.ops import args as tool_args

    parser = argparse.ArgumentParser(
        prog="kubectl signet",
        description="Signet's Certificates, Issuers and Secrets, as a kubectl plugin "
        "(the `signet` CLI's status, renew and inspect).",
    )
    tool_args.add_global_connection_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_tool_commands(commands)
    return parser


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-signet`` console script."""
    from signet.ops import args as tool_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_kubectl_parser()
    args = parser.parse_args(argv)
    try:
        tool_args.apply_global_connection_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    result: int = args.func(args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kms-emulator"]:
        return _kms_emulator(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

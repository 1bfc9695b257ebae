"""The `signet` command: one entry point for the operator, its tools and the dev cluster.

Subcommands import their modules lazily so `signet --help` stays fast and a missing
optional piece (say, the Go-built tools) only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence


def _cluster_up(args: argparse.Namespace) -> int:
    from signet.devcluster import LocalControlPlane

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalControlPlane(with_controller_manager=not args.no_controller_manager) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        print(f"# kube-apiserver {plane.server}; Ctrl-C stops and cleans up", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _kms_emulator(argv: Sequence[str]) -> int:
    from signet.kms.emulator import cli

    return cli.main(list(argv))


def _run(args: argparse.Namespace) -> int:
    from signet.controller import main

    return main.run(args)


def _status(args: argparse.Namespace) -> int:
    from signet.tools import commands

    return commands.status_command(args)


def _renew(args: argparse.Namespace) -> int:
    from signet.tools import commands

    return commands.renew_command(args)


def _inspect(args: argparse.Namespace) -> int:
    from signet.tools import commands

    return commands.inspect_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    cluster = commands.add_parser("cluster", help="a local Kubernetes control plane")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_commands.add_parser(
        "up", help="start etcd + kube-apiserver on loopback until Ctrl-C"
    )
    up.add_argument(
        "--no-controller-manager",
        action="store_true",
        help="skip kube-controller-manager (no garbage collection or namespace deletion)",
    )
    up.set_defaults(func=_cluster_up)

    run = commands.add_parser("run", help="run the operator")
    from signet.controller.main import add_arguments

    add_arguments(run)
    run.set_defaults(func=_run)

    # The ops commands' flags live in a light module; their work is imported on use.
    from signet.tools import args as tool_args

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

    commands.add_parser(
        "kms-emulator",
        help="a local server speaking the Cloud KMS gRPC API (see `signet kms-emulator -h`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kms-emulator"]:
        return _kms_emulator(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

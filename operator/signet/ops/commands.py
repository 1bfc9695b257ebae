"""Argument parsing and exit codes for the ops commands; the work is in the sibling modules.

``signet.cli`` imports this only when one of these subcommands runs, so the operator's
own start-up never pays for it.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from kubernetes.client import ApiException

from signet.ops import report
from signet.ops.kube import Cluster, ToolError, api_error, connect


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _connect(args: argparse.Namespace) -> Cluster:
    return connect(args.kubeconfig, args.context)


def status_command(args: argparse.Namespace) -> int:
    from signet.ops.status import status

    try:
        cluster = _connect(args)
        namespace = None if args.all_namespaces else args.namespace or cluster.default_namespace
        text, _all_ready = status(cluster, namespace)
    except ToolError as error:
        return _fail(str(error))
    print(text)
    return 0


def renew_command(args: argparse.Namespace) -> int:
    from signet.ops.renew import renew

    if bool(args.names) == bool(args.all):
        return _fail("name one or more Certificates, or pass --all")
    if args.all_namespaces and not args.all:
        return _fail("-A/--all-namespaces needs --all")
    try:
        cluster = _connect(args)
        namespace = None if args.all_namespaces else args.namespace or cluster.default_namespace
        lines = renew(cluster, args.names, namespace)
    except ToolError as error:
        return _fail(str(error))
    print("\n".join(lines))
    return 0


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise ToolError(f"cannot read {path}: {error.strerror}") from None


def inspect_command(args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC)
    if (args.file is None) == (args.secret is None):
        return _fail("give a Secret name or --file PATH (not both)")
    try:
        if args.file is not None:
            content = _read(args.file)
            assert content is not None
            details = report.describe_file(content, key=_read(args.key), ca=_read(args.ca))
            print(report.render([("File", str(args.file)), *details.rows(now)]))
            return 0
        cluster = _connect(args)
        namespace = args.namespace or cluster.default_namespace
        try:
            secret = cluster.core.read_namespaced_secret(args.secret, namespace)
        except ApiException as error:
            if error.status == 404:
                raise ToolError(f"Secret {namespace}/{args.secret} not found") from None
            raise api_error(error, f"Secret {namespace}/{args.secret}") from None
        described = report.describe_secret(cluster.api.sanitize_for_serialization(secret))
    except (ToolError, report.InspectError) as error:
        return _fail(str(error))
    print(report.render(described.rows(now)))
    return 0

"""Flags of ``signet status``, ``renew`` and ``inspect``.

Separate from the commands so building ``signet``'s parser (every invocation, including the
operator's own start-up) does not import the Kubernetes client.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


_GLOBAL = "global_"


def add_global_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """kubectl's flags, accepted before the command too (``kubectl signet -n NS status``).

    Kept under their own names: a subcommand's defaults would overwrite same-named values.
    """
    group = parser.add_argument_group("kubectl flags (also accepted after the command)")
    group.add_argument(
        "--kubeconfig", dest=f"{_GLOBAL}kubeconfig", metavar="KUBECONFIG", help="kubeconfig file"
    )
    group.add_argument(
        "--context", dest=f"{_GLOBAL}context", metavar="CONTEXT", help="kubeconfig context"
    )
    group.add_argument(
        "-n", "--namespace", dest=f"{_GLOBAL}namespace", metavar="NAMESPACE", help="namespace"
    )
    group.add_argument(
        "-A",
        "--all-namespaces",
        dest=f"{_GLOBAL}all_namespaces",
        action="store_true",
        help="every namespace (status, renew --all)",
    )


def apply_global_connection_arguments(args: argparse.Namespace) -> None:
    """Fill the command's flags from those given before it; the command's own win.
    Raises ValueError for a flag the command does not take (-A with inspect)."""
    for name in ("kubeconfig", "context", "namespace"):
        value = getattr(args, _GLOBAL + name)
        if value is not None and getattr(args, name, None) is None:
            setattr(args, name, value)
    if getattr(args, _GLOBAL + "all_namespaces"):
        if not hasattr(args, "all_namespaces"):
            raise ValueError(f"-A/--all-namespaces does not apply to {args.command}")
        args.all_namespaces = True
    if getattr(args, "all_namespaces", False) and args.namespace is not None:
        raise ValueError("-n/--namespace and -A/--all-namespaces exclude each other")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="default: the context's namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true")


def add_renew_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="Certificates to renew")
    parser.add_argument("--all", action="store_true", help="every Certificate in the namespace")
    parser.add_argument("-n", "--namespace", help="default: the context's namespace")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with --all: every namespace"
    )


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("secret", nargs="?", metavar="SECRET", help="Secret written by Signet")
    parser.add_argument("-n", "--namespace", help="default: the context's namespace")
    parser.add_argument(
        "--file",
        type=Path,
        help="inspect a local PEM/DER certificate (chain) or OpenSSH certificate instead",
    )
    parser.add_argument("--key", type=Path, help="with --file: private key to check against")
    parser.add_argument(
        "--ca", type=Path, help="with --file: ca.crt or ssh-ca.pub to check the signature against"
    )

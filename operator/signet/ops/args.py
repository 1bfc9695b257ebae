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

"""`python -m signet_dev cluster up`: a real control plane on loopback, for trying Signet.

Development only: the operator never imports this package (an import contract says so),
and the operator's image does not carry it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from signet_dev import LocalControlPlane


def _cluster_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    # SIGINT explicitly too: a process started in the background of a shell without job
    # control inherits SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalControlPlane(
        with_controller_manager=not args.no_controller_manager, with_node=args.node
    ) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        if plane.node is not None:
            print(f"# node {plane.node.name} ({plane.node.ip}) is Ready", file=sys.stderr)
        print(f"# kube-apiserver {plane.server}; Ctrl-C stops and cleans up", file=sys.stderr)
        stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signet_dev", description=__doc__)
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
    up.add_argument(
        "--node",
        action="store_true",
        help="also run a real kubelet node (root, containerd and runc needed)",
    )
    up.set_defaults(func=_cluster_up)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

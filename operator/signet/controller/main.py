"""`signet run`: start the operator with kopf, configured from flags and environment.

Nothing that imports kopf is imported at module level: `run` must keep the kubernetes
client out of the process before kopf is loaded (see `keep_kubernetes_client_out`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from signet.kms import EMULATOR_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only these namespaces (default: all)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering name: standbys wait while one acts (default: no peering)",
    )
    parser.add_argument(
        "--shards",
        choices=("off", "auto"),
        default="off",
        help="auto: replicas share the work, each acting on the objects it wins by rendezvous "
        "hashing over the live members' Leases in the operator namespace (see README, "
        "'Scaling out: sharding'); off: one replica acts (alone, or the active one of a peering)",
    )
    parser.add_argument(
        "--shard-lease-seconds",
        type=float,
        default=15.0,
        help="a lost replica's share is taken over within this; it stops acting after 2/3 of it "
        "without a renewal",
    )
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get("SIGNET_NAMESPACE", "signet-system"),
        help="where Events about cluster-scoped objects go and ClusterIssuers' CA Secrets "
        "live ($SIGNET_NAMESPACE, set by the chart from the pod's namespace)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="default: in-cluster or $KUBECONFIG",
    )
    parser.add_argument(
        "--kms-emulator",
        default=os.environ.get(EMULATOR_ENV),
        metavar="HOST:PORT",
        help="talk to the Signet KMS emulator instead of Cloud KMS ($SIGNET_KMS_EMULATOR)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9402, help="Prometheus /metrics port; 0 disables"
    )
    parser.add_argument(
        "--health-port", type=int, default=8080, help="liveness/readiness /healthz port; 0 disables"
    )
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--audit-log", type=Path, help="also append audit records (JSON lines) to this file"
    )
    parser.add_argument(
        "--sign-qps",
        type=float,
        default=float(os.environ["SIGNET_KMS_SIGN_QPS"])
        if os.environ.get("SIGNET_KMS_SIGN_QPS")
        else None,
        help="KMS signatures per second, process-wide ($SIGNET_KMS_SIGN_QPS; default unlimited)",
    )
    parser.add_argument(
        "--max-concurrent-signs", type=int, default=32, help="KMS signatures in flight"
    )
    parser.add_argument(
        "--kms-deadline",
        type=float,
        default=10.0,
        help="seconds one signature may take including retries before the attempt fails",
    )
    parser.add_argument(
        "--max-concurrent-issuances", type=int, default=32, help="reconcile workers"
    )
    # Tests only: rotate keys without the trust overlap, to show the handshakes it saves.
    parser.add_argument(
        "--unsafe-rotation-without-overlap", action="store_true", help=argparse.SUPPRESS
    )


def run(args: argparse.Namespace) -> int:
    keep_kubernetes_client_out()
    import kopf

    # Importing registers the handlers with kopf's default registry.
    from signet.controller import handlers, kopf_adapter  # noqa: F401
    from signet.controller.informer import LIST_PAGE
    from signet.controller.pacing import ListPacer
    from signet.controller.runtime import Config

    if args.shards == "auto" and args.peering:
        print("signet run: --shards auto and --peering exclude each other", file=sys.stderr)
        return 2
    if args.shard_lease_seconds < 3:
        print("signet run: --shard-lease-seconds must be at least 3", file=sys.stderr)
        return 2
    config = Config(
        namespaces=list(args.namespace),
        kms_emulator=args.kms_emulator,
        metrics_port=args.metrics_port,
        audit_log=args.audit_log,
        sign_qps=args.sign_qps,
        max_concurrent_signs=args.max_concurrent_signs,
        workers=args.max_concurrent_issuances,
        kms_deadline=args.kms_deadline,
        rotation_overlap=not args.unsafe_rotation_without_overlap,
        peering=args.peering,
        operator_namespace=args.operator_namespace,
        shards=args.shards == "auto",
        shard_lease_seconds=args.shard_lease_seconds,
        replica_id=replica_id(),
        # kopf pauses every replica on a priority tie; a random one makes exactly one active.
        peering_priority=secrets.randbelow(2**31) + 1 if args.peering else 0,
    )
    if args.kubeconfig:
        # kopf's login reads the kubeconfig from $KUBECONFIG and nowhere else; Signet's own
        # client logs in through the same functions, so this one variable serves both.
        os.environ["KUBECONFIG"] = args.kubeconfig
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    if args.peering:
        ensure_peering(args.peering, config.namespaces)
    if not args.verbose:  # one "Handler succeeded" line per watch event is noise at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=config.peering_priority,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz"
        if args.health_port
        else None,
        memo=kopf.Memo(config=config, pacer=ListPacer(LIST_PAGE)),
        **kopf_adapter.run_options(),
    )
    return 0


def replica_id() -> str:
    """The pod's name (the chart sets $POD_NAME from the downward API); else host and pid,
    unique for processes sharing a host."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def keep_kubernetes_client_out() -> None:
    """Make ``import kubernetes`` fail in the operator process.

    kopf imports the official client whenever it is installed (Signet's tools and tests
    install it), only to recognise its model objects when handed one. The operator never
    hands kopf such objects and makes its own calls through aiohttp
    (`signet.controller.kubeapi`), but the import alone is ~45 MiB of resident memory,
    a quarter of the budget for 10,000 Certificates. A ``None`` entry in ``sys.modules``
    is Python's documented way to turn an import into ImportError, which kopf handles.
    """
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]


def ensure_peering(name: str, namespaces: list[str]) -> None:
    """Create kopf's peering object(s) if missing.

    kopf only patches an existing peering object and silently runs standalone without one,
    so replicas started with ``--peering`` would all act. Creating it here, before kopf
    starts, makes ``--peering`` mean what it says.
    """
    from signet.controller.kubeapi import KubeApi

    async def create() -> None:
        api = KubeApi(connections=1)
        try:
            scopes: list[str | None] = [*namespaces] or [None]
            for namespace in scopes:
                await api.create_peering(name, namespace)
        finally:
            await api.close()

    asyncio.run(create())

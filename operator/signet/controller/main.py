"""`signet run`: start the operator with kopf, configured from flags and environment."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from pathlib import Path

from signet.controller.runtime import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch only these namespaces"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", default=True, help="no peering (default)"
    )
    peering.add_argument(
        "--peering", metavar="NAME", help="kopf peering name: standbys wait while one acts"
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="default: in-cluster or $KUBECONFIG",
    )
    parser.add_argument(
        "--kms-emulator",
        default=os.environ.get("SIGNET_KMS_EMULATOR"),
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


def run(args: argparse.Namespace) -> int:
    import kopf

    # Imported for its side effect: registering the handlers with kopf's default registry.
    from signet.controller import handlers  # noqa: F401

    config = Config(
        kubeconfig=args.kubeconfig,
        namespaces=list(args.namespace),
        kms_emulator=args.kms_emulator,
        metrics_port=args.metrics_port,
        audit_log=args.audit_log,
        sign_qps=args.sign_qps,
        max_concurrent_signs=args.max_concurrent_signs,
        workers=args.max_concurrent_issuances,
        kms_deadline=args.kms_deadline,
        peering=args.peering,
        # kopf pauses every replica on a priority tie; a random one makes exactly one active.
        peering_priority=secrets.randbelow(2**31) + 1 if args.peering else 0,
    )
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    if args.peering:
        ensure_peering(args.peering, config.namespaces, args.kubeconfig)
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
        memo=kopf.Memo(config=config),
    )
    return 0


def ensure_peering(name: str, namespaces: list[str], kubeconfig: str | None) -> None:
    """Create kopf's peering object(s) if missing.

    kopf only patches an existing peering object and silently runs standalone without one,
    so replicas started with ``--peering`` would all act. Creating it here, before kopf
    starts, makes ``--peering`` mean what it says.
    """
    import kubernetes

    from signet.controller.kubeapi import KubeApi

    api = KubeApi.from_environment(kubeconfig, threads=1)
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    try:
        scopes: list[str | None] = list(namespaces) or [None]
        for namespace in scopes:
            try:
                if namespace:
                    api.custom.create_namespaced_custom_object(
                        "kopf.dev", "v1", namespace, "kopfpeerings", {**body, "kind": "KopfPeering"}
                    )
                else:
                    api.custom.create_cluster_custom_object(
                        "kopf.dev",
                        "v1",
                        "clusterkopfpeerings",
                        {**body, "kind": "ClusterKopfPeering"},
                    )
            except kubernetes.client.ApiException as error:
                if error.status != 409:
                    raise
    finally:
        api.close()

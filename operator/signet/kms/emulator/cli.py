"""``signet kms-emulator``: run the emulator as a process (dev clusters, manual testing).

Faults can be preset from flags or ``SIGNET_KMS_EMULATOR_*`` environment variables so a
dev cluster can be made deliberately flaky without code changes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import grpc

from signet.kms.algorithms import ALGORITHMS
from signet.kms.emulator.faults import Faults
from signet.kms.emulator.server import DEFAULT_LOCATION, DEFAULT_PROJECT, serve

ENV_PREFIX = "SIGNET_KMS_EMULATOR_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def _create_spec(value: str) -> tuple[str, str, str]:
    """Parse ``KEYRING/KEY:ALGORITHM``."""
    path, sep, algorithm = value.partition(":")
    ring, slash, key = path.partition("/")
    if not (sep and slash and ring and key):
        raise argparse.ArgumentTypeError(f"expected KEYRING/KEY:ALGORITHM, got {value!r}")
    if algorithm not in ALGORITHMS:
        raise argparse.ArgumentTypeError(
            f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}"
        )
    return ring, key, algorithm


def _status_code(value: str) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[value.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown gRPC status code {value!r}") from None


def build_arg_parser() -> argparse.ArgumentParser:
    """Arguments of ``signet kms-emulator`` (also usable standalone)."""
    p = argparse.ArgumentParser(
        prog="signet kms-emulator",
        description="Local Cloud KMS (KeyManagementService gRPC) emulator for signing keys.",
    )
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env("PORT", "0") or 0))
    p.add_argument("--state-dir", default=_env("STATE_DIR"), help="persist keys (sealed) here")
    p.add_argument("--audit-log", default=_env("AUDIT_LOG"), help="append JSON audit lines here")
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--location", default=DEFAULT_LOCATION)
    p.add_argument(
        "--create",
        action="append",
        type=_create_spec,
        default=[],
        metavar="KEYRING/KEY:ALGORITHM",
        help="ensure this key exists at start-up and print its version name (repeatable)",
    )
    p.add_argument("--latency-ms", type=float, default=float(_env("LATENCY_MS", "0") or 0))
    p.add_argument("--error-rate", type=float, default=float(_env("ERROR_RATE", "0") or 0))
    p.add_argument(
        "--error-code",
        type=_status_code,
        default=_status_code(_env("ERROR_CODE") or "UNAVAILABLE"),
        help="status returned for --error-rate failures (UNAVAILABLE, RESOURCE_EXHAUSTED, ...)",
    )
    p.add_argument(
        "--sign-qps",
        type=float,
        default=float(q) if (q := _env("SIGN_QPS")) else None,
        help="AsymmetricSign quota per second (RESOURCE_EXHAUSTED beyond it)",
    )
    return p


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The initial fault set described by parsed flags (flags override environment)."""
    faults = Faults()
    faults.latency_s = args.latency_ms / 1000
    faults.error_rate = args.error_rate
    faults.error_code = args.error_code
    faults.sign_qps = args.sign_qps
    return faults


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM. Prints ``listening on ADDRESS`` then one line per key."""
    args = build_arg_parser().parse_args(argv)
    faults = faults_from_args(args)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Handlers first: a supervisor may send SIGTERM as soon as the names are printed.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = serve(args.port, args.state_dir, args.audit_log, host=args.host, faults=faults)
    try:
        print(f"listening on {server.address}", flush=True)
        for ring, key, algorithm in args.create:
            version = server.ensure_key(
                ring, key, algorithm, project=args.project, location=args.location
            )
            print(version.name, flush=True)
        stopping.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

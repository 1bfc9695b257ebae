"""Micro-benchmark: signatures/second through CloudKmsSigner vs a bare AsymmetricSign call.

The emulator runs in a separate process (so its signing does not compete for our GIL)
and both variants use the same async client and the same concurrency; the difference is
what Signet's signer adds: local hashing, CRC32C, response checks, limiter, retry loop and
(optionally) local signature verification.

    .venv/bin/python bench/kms_microbench.py [--count 2000] [--concurrency 1 16] \
        [--algorithm EC_SIGN_P256_SHA256] [--emulator HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
from google.cloud.kms_v1 import types as kms

from signet.kms.algorithms import get_algorithm
from signet.kms.cloudkms import CloudKmsSigner, close_client, create_client
from signet.kms.crc import crc32c
from signet.kms.limiter import SignLimiter

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"\x30\x82\x01\x00" + b"tbs-certificate-bytes " * 40


@dataclass
class Result:
    """One measured run."""

    label: str
    concurrency: int
    count: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_s

    def line(self) -> str:
        return (
            f"{self.label:<28} c={self.concurrency:<3} {self.rate:8.0f} sig/s  "
            f"{self.wall_s / self.count * self.concurrency * 1e3:7.3f} ms/sig latency  "
            f"{self.cpu_s / self.count * 1e6:7.1f} us client CPU/sig"
        )


@contextmanager
def emulator_process(algorithm: str) -> Iterator[tuple[str, str]]:
    """Start ``python -m signet.kms.emulator`` with one key; yields (address, version)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signet.kms.emulator",
            "--port",
            "0",
            "--create",
            f"bench/key:{algorithm}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip().removeprefix("listening on ")
        version = proc.stdout.readline().strip()
        yield address, version
    finally:
        proc.terminate()
        proc.wait(10)


async def run(label: str, call: Callable[[], Awaitable[object]], count: int, conc: int) -> Result:
    """``count`` calls spread over ``conc`` workers."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return Result(label, conc, count, time.perf_counter() - t0, time.process_time() - cpu0)


async def bench(
    address: str, version: str, algorithm: str, count: int, levels: list[int]
) -> list[Result]:
    """Print and return the runs: per level, bare, signer without and with verification."""
    client: KeyManagementServiceAsyncClient = create_client(address)
    alg = get_algorithm(algorithm)
    if alg.prehashed:
        digest = alg.digest(PAYLOAD)
        request = kms.AsymmetricSignRequest(
            name=version,
            digest=kms.Digest(**{alg.digest_field: digest}),
            digest_crc32c=crc32c(digest),
        )
    else:
        request = kms.AsymmetricSignRequest(name=version, data=PAYLOAD)

    async def bare() -> object:
        return await client.asymmetric_sign(request=request, retry=None, timeout=30)

    limiter = SignLimiter(max_concurrency=max(levels))
    checked = CloudKmsSigner(client, version, limiter=limiter)
    unchecked = CloudKmsSigner(client, version, limiter=limiter, verify_signatures=False)
    await checked.public_key()
    await unchecked.public_key()

    async def sign_checked() -> bytes:
        return await checked.sign(PAYLOAD)

    async def sign_unchecked() -> bytes:
        return await unchecked.sign(PAYLOAD)

    await run("warm-up", bare, 200, 4)
    print(f"algorithm {algorithm}, {count} signatures per run, emulator {address}")
    everything: list[Result] = []
    for conc in levels:
        results = []
        for label, call in (
            ("bare AsymmetricSign", bare),
            ("CloudKmsSigner (no verify)", sign_unchecked),
            ("CloudKmsSigner (verify)", sign_checked),
        ):
            results.append(await run(label, call, count, conc))
            print(results[-1].line())
        base = results[0]
        for r in results[1:]:
            extra_wall = (r.wall_s - base.wall_s) / count * 1e6
            extra_cpu = (r.cpu_s - base.cpu_s) / count * 1e6
            print(
                f"  overhead {r.label}: {extra_wall:+.1f} us wall/sig, "
                f"{extra_cpu:+.1f} us client CPU/sig, throughput {r.rate / base.rate:.0%} of bare"
            )
        everything += results
    await close_client(client)
    return everything


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--algorithm", default="EC_SIGN_P256_SHA256")
    p.add_argument("--emulator", help="use a running emulator (needs --key-version)")
    p.add_argument("--key-version")
    args = p.parse_args()
    if args.emulator:
        if not args.key_version:
            p.error("--emulator needs --key-version")
        asyncio.run(
            bench(args.emulator, args.key_version, args.algorithm, args.count, args.concurrency)
        )
        return 0
    with emulator_process(args.algorithm) as (address, version):
        asyncio.run(bench(address, version, args.algorithm, args.count, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())

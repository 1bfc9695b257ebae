"""Figure ``signers``: the two signing backends under the same micro-benchmark.

For each backend, at each concurrency: the **bare** call (Cloud KMS: one AsymmetricSign
through the async client to the emulator in its own process; PKCS#11: one ``C_Sign``
through python-pkcs11 on one SoftHSM2 session, on the same single worker thread the
signer uses) against Signet's signer with its checks on (Cloud KMS: hashing, CRC32C,
response checks, limiter, retry loop, local verification; PKCS#11: limiter, session pool,
retry loop, DER encoding, local verification). What the signer adds per signature is the
difference. No cluster is started.

    .venv/bin/python -m bench --only signers [--signer-count 2000]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.kms_microbench import PAYLOAD, Result, emulator_process, run
from bench.kms_microbench import bench as cloudkms_bench

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
ALGORITHM = "EC_SIGN_P256_SHA256"
PIN = "bench-pin"
LABEL = "bench"
"""The token's label."""


@contextmanager
def softhsm_token() -> Iterator[str]:
    """A fresh SoftHSM2 token with one EC P-256 key; yields the module path. Sets
    ``SOFTHSM2_CONF`` for this process (the module reads it when first loaded)."""
    module = next((m for m in MODULES if os.path.exists(m)), None)
    if module is None or shutil.which("softhsm2-util") is None:
        raise SystemExit("softhsm2 is not installed (apt-get install softhsm2)")
    folder = Path(tempfile.mkdtemp(prefix="signet-bench-hsm-"))
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench"]  # noqa: RUF005
        + ["--so-pin", "bench-so-pin", "--pin", PIN],
        check=True,
        capture_output=True,
    )
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(module).get_token(token_label=LABEL)
    with token.open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(store=True, label="ca", id=b"\x01")
    try:
        yield module
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def pkcs11_bench(module: str, count: int, levels: list[int]) -> list[Result]:
    """Bare ``C_Sign`` vs :class:`Pkcs11Signer`, printed and returned."""
    from pkcs11 import Mechanism, ObjectClass

    from signet.api.pkcs11uri import parse_pkcs11_key
    from signet.kms import pkcs11pool
    from signet.kms.algorithms import get_algorithm
    from signet.kms.limiter import SignLimiter
    from signet.kms.pkcs11signer import Pkcs11Signer

    async def pin() -> str:
        return PIN

    key = parse_pkcs11_key(
        {"uri": "pkcs11:token=bench;object=ca", "module": module, "pinFile": "/"}
    )
    signer = Pkcs11Signer(key, pin, limiter=SignLimiter(max_concurrency=max(levels)))
    await signer.public_key()
    pool = signer.pool
    assert pool is not None
    digest = get_algorithm(ALGORITHM).digest(PAYLOAD)
    session = pool.slot.get_token().open()  # logged in already: the signer's login holds
    private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="ca")

    async def bare() -> bytes:
        future = pkcs11pool.run_in(
            pool.module, lambda: private.sign(digest, mechanism=Mechanism.ECDSA)
        )
        return bytes(await asyncio.wrap_future(future))

    async def signed() -> bytes:
        return await signer.sign(PAYLOAD)

    await run("warm-up", bare, 200, 4)
    print(f"algorithm {ALGORITHM}, {count} signatures per run, SoftHSM2 {module}")
    results: list[Result] = []
    for conc in levels:
        base = await run("bare C_Sign", bare, count, conc)
        mine = await run("Pkcs11Signer (verify)", signed, count, conc)
        for r in (base, mine):
            print(r.line())
        print(
            f"  overhead {mine.label}: {(mine.wall_s - base.wall_s) / count * 1e6:+.1f} us "
            f"wall/sig, throughput {mine.rate / base.rate:.0%} of bare"
        )
        results += [base, mine]
    pool.module.executor.submit(session.close).result()
    return results


def _figures(backend: str, results: list[Result]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_level: dict[int, list[Result]] = {}
    for r in results:
        by_level.setdefault(r.concurrency, []).append(r)
    for level, rs in by_level.items():
        base, best = rs[0], rs[-1]
        out[f"c{level}"] = {
            "bare_signatures_per_s": round(base.rate),
            "signer_signatures_per_s": round(best.rate),
            "added_latency_us_per_signature": round(
                (best.wall_s - base.wall_s) / best.count * level * 1e6, 1
            ),
            "added_wall_us_per_signature": round((best.wall_s - base.wall_s) / best.count * 1e6, 1),
            "bare_cpu_us_per_signature": round(base.cpu_s / base.count * 1e6, 1),
            "signer_cpu_us_per_signature": round(best.cpu_s / best.count * 1e6, 1),
        }
    return {backend: out}


def signers_figure(count: int = 2000, levels: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    """Both backends' figures (the JSON ``signers`` entry)."""
    figures: dict[str, Any] = {}
    with emulator_process(ALGORITHM) as (address, version):
        results = asyncio.run(cloudkms_bench(address, version, ALGORITHM, count, list(levels)))
    figures.update(_figures("cloudkms", results))
    with softhsm_token() as module:
        results = asyncio.run(pkcs11_bench(module, count, list(levels)))
    figures.update(_figures("pkcs11", results))
    return figures

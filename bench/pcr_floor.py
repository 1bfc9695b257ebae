"""The pod-certificate floor (figure 8) as a process of its own.

``python -m bench.pcr_floor KMS_ADDRESS KEY_VERSION`` (``$KUBECONFIG`` set) prints ``ready``
once its KMS client, signer and CA are set up, then answers every PodCertificateRequest it
is given on stdin (one created object, as the apiserver returned it, per JSON line) until
stdin closes, and prints ``done <count>``.

It is a process of its own for the reason the operator is: the harness creates the
requests and watches them, and a floor sharing the harness's interpreter (and GIL) with
that work would be slower than the operator, which has an interpreter to itself, and so no
floor at all. What it does per request is what the operator must do, and nothing else:
read the stub's key, build the same leaf (the SPIFFE ID of the request's ServiceAccount,
the same usages and lifetime), sign it once through ``CloudKmsSigner`` at the operator's
concurrency, and write one status like the operator's through the operator's own client.
No audit record and no Event: those are the operator's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import datetime
import functools
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.api.times import timestamp
from signet.controller.kubeapi import KubeApi
from signet.decisions import podcertificate as pc
from signet.kms.cloudkms import CloudKmsSigner, close_client, create_client
from signet.kms.limiter import SignLimiter
from signet.pki import kmskey
from signet.pki import x509 as pki_x509
from signet.reasons import Reason

Obj = dict[str, Any]
LIFETIME = datetime.timedelta(hours=24)
"""What Signet grants by default: the request's maxExpirationSeconds default (24h) and the
issuer's ``podCertificates.defaultDuration`` (24h)."""
TRUST_DOMAIN = "cluster.local"
"""The Issuer's default trust domain, in the SPIFFE ID the floor writes too."""


def status_for(body: Obj, leaf: x509.Certificate, spiffe_id: str) -> Obj:
    """The status the operator writes for an issued request: chain, validity,
    beginRefreshAt and an Issued condition with the operator's message."""
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    refresh = pc.begin_refresh_at(body["metadata"]["uid"], not_before, not_after)
    serial = format(leaf.serial_number, "x")
    return {
        "certificateChain": leaf.public_bytes(serialization.Encoding.PEM).decode(),
        "notBefore": timestamp(not_before),
        "notAfter": timestamp(not_after),
        "beginRefreshAt": timestamp(refresh),
        "conditions": [
            {
                "type": "Issued",
                "status": "True",
                "reason": str(Reason.ISSUED),
                "message": f"issued {spiffe_id} serial {serial}, valid until "
                f"{timestamp(not_after)}",
                "lastTransitionTime": timestamp(datetime.datetime.now(datetime.UTC)),
            }
        ],
    }


async def serve(
    kms_address: str, key_version: str, workers: int, signs: int, connections: int
) -> int:
    # As the operator does: the default pool (cores + 4 threads) would cap the leaves being
    # built, each blocking a thread while KMS signs, at six.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(signs + 8, thread_name_prefix="sign")
    )
    client = create_client(kms_address)
    signer = CloudKmsSigner(client, key_version, limiter=SignLimiter(max_concurrency=signs))
    ca: x509.Certificate = await kmskey.sign_in_thread(
        signer, lambda key: pki_x509.build_self_signed_ca(key, "bench floor CA", 10 * LIFETIME)
    )
    api = KubeApi(connections=connections)
    todo: asyncio.Queue[Obj | None] = asyncio.Queue()

    def read() -> None:
        """stdin, a line at a time, into the queue; a None per worker at its end."""
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(todo.put_nowait, _json(line))
        for _ in range(workers):
            loop.call_soon_threadsafe(todo.put_nowait, None)

    async def answer(body: Obj) -> None:
        metadata, spec = body["metadata"], body["spec"]
        stub = x509.load_der_x509_csr(base64.b64decode(spec["stubPKCS10Request"]))
        account = spec["serviceAccountName"]
        spiffe_id = f"spiffe://{TRUST_DOMAIN}/ns/{metadata['namespace']}/sa/{account}"
        request = pki_x509.LeafRequest(
            spiffe_id=spiffe_id, usages=pc.USAGES, duration=LIFETIME - pki_x509.BACKDATE
        )
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        build = functools.partial(pki_x509.build_leaf, request, stub.public_key(), ca, now=now)
        leaf: x509.Certificate = await kmskey.sign_in_thread(signer, build)
        await api.update_pod_certificate_request_status(
            metadata["namespace"],
            metadata["name"],
            {**body, "status": status_for(body, leaf, spiffe_id)},
        )

    answered = 0

    async def worker() -> None:
        nonlocal answered
        while (body := await todo.get()) is not None:
            await answer(body)
            answered += 1

    try:
        print("ready", flush=True)
        threading.Thread(target=read, name="stdin", daemon=True).start()
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        await api.close()
        await close_client(client)
    print(f"done {answered}", flush=True)
    return 0


def _json(line: str) -> Obj:
    body: Obj = json.loads(line)
    return body


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pcr_floor", description=__doc__)
    p.add_argument("kms_address")
    p.add_argument("key_version")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--signs", type=int, default=32)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args(argv)
    return asyncio.run(
        serve(args.kms_address, args.key_version, args.workers, args.signs, args.connections)
    )


if __name__ == "__main__":
    sys.exit(main())

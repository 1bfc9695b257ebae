"""Start-up memory: the operator's resident memory once idle with one Issuer and no
Certificate, over several fresh processes.

``python -m bench.startmem [--runs N] [--source DIR ...]`` starts a control plane and the
KMS emulator once, creates one Ready Issuer (Cloud KMS, emulator key), then starts and
stops the operator ``--runs`` times for each ``--source`` (a folder holding ``signet``, to
compare a snapshot of the source with this one; default: the harness's own), in turn, so
that load on a shared machine falls on every source alike. A reading is taken once that
process has resolved the Issuer (its one GetPublicKey reached the emulator) and its
resident memory has not changed for three seconds (the heap trimmer has run). Prints the
median and spread per source.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kube import Kube
from bench.procs import GET_PUBLIC_KEY, ROOT, SOURCE, KmsEmulator, Operator, child_env, proc_memory
from signet_dev import LocalControlPlane, tools_bin

NAMESPACE = "startmem"
KEY = "startmem"


def idle_memory(
    operator: Operator, kms: KmsEmulator, since: float, timeout: float = 60
) -> dict[str, Any]:
    """The process's memory once it has resolved the Issuer and stood still."""
    deadline = time.monotonic() + timeout
    while not kms.count(GET_PUBLIC_KEY, key=KEY, since=since):
        if time.monotonic() > deadline:
            raise TimeoutError("the operator did not resolve the Issuer")
        time.sleep(0.25)
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        rss = proc_memory(operator.pid)["rss_mib"]
        if rss != last:
            last, since = rss, time.monotonic()
        elif time.monotonic() - since >= 3:
            break
        time.sleep(0.25)
    return proc_memory(operator.pid)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startmem", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source", action="append", type=Path, default=[])
    args = parser.parse_args()
    sources: list[Path] = args.source or [SOURCE]
    workdir = Path(tempfile.mkdtemp(prefix="signet-startmem-"))
    kms = KmsEmulator(workdir, [KEY])
    tools = ROOT / ".tools" / "bin"
    plane = LocalControlPlane(
        bin_dir=tools if (tools / "kube-apiserver").exists() else tools_bin(),
        with_controller_manager=False,
    )
    readings: dict[Path, list[dict[str, Any]]] = {source: [] for source in sources}
    try:
        plane.start()
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        kube = Kube(plane.kubeconfig)
        kube.apply_crds(ROOT / "crds")
        kms.start()
        kube.ensure_namespace(NAMESPACE)
        kube.create_issuer(NAMESPACE, "ca", kms.versions[KEY])
        # A first start makes the Issuer's CA (a signature and a Secret): not measured.
        warm_up = Operator(plane.kubeconfig, kms.address, workdir)
        warm_up.start_for([NAMESPACE])
        try:
            kube.wait_issuer_ready(NAMESPACE, "ca")
        finally:
            warm_up.stop()
        for run in range(args.runs):
            for source in sources:
                env = {**child_env(), "PYTHONPATH": str(source)}
                operator = Operator(plane.kubeconfig, kms.address, workdir / f"{run}", env=env)
                operator.folder.mkdir(exist_ok=True)
                since = time.time()
                operator.start_for([NAMESPACE])
                try:
                    reading = idle_memory(operator, kms, since)
                finally:
                    operator.stop()
                readings[source].append(reading)
                print(f"run {run} {source}: {reading}", flush=True)
        kube.close()
    finally:
        kms.stop()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for source, taken in readings.items():
        rss = [r["rss_mib"] for r in taken]
        heap = [r["rss_by_mapping_mib"]["heap"] for r in taken]
        print(
            f"{source}: VmRSS median {statistics.median(rss):.1f} MiB "
            f"(range {min(rss):.1f}-{max(rss):.1f}, n={len(rss)}); "
            f"heap median {statistics.median(heap):.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

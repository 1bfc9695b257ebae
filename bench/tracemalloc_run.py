"""Run ``signet`` with tracemalloc on; SIGUSR1 writes the top allocation sites to a file.

``python bench/tracemalloc_run.py OUT.txt trace run --kubeconfig=...`` is what ``python -m
bench --tracemalloc`` starts instead of ``python -m signet.cli run ...`` (the operator itself
is unchanged); ``--mallocstats`` passes ``stats`` instead of ``trace`` and only pymalloc's
arena statistics are written. Tracing costs CPU and memory of its own: use it for where
memory goes, not for how much.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import FrameType

from signet.controller.main import keep_kubernetes_client_out


def main() -> int:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    # Import first: tracing the imports is slow (minutes) and they are a fixed baseline
    # (measure it with `python -c "import signet.controller.handlers"`).
    keep_kubernetes_client_out()  # as `signet run` does, before kopf is imported
    for module in ("kopf", "aiohttp", "signet.controller.handlers"):
        importlib.import_module(module)
    from signet.cli import main as signet_main

    at_peak: list[str] = []
    if mode == "trace":
        tracemalloc.start(10)
        threading.Thread(target=_follow_peak, args=(at_peak,), daemon=True).start()
    dumps = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal dumps
        dumps += 1
        lines = [f"# dump {dumps}"]
        if tracemalloc.is_tracing():
            lines += _top_allocations()
            lines += ["# near the peak of this process", *at_peak]
        with out.open("a") as fh:
            fh.write("\n".join(lines) + "\n## pymalloc (allocated vs. held: fragmentation)\n")
            fh.flush()
            _debugmallocstats_to(fh.fileno())
            fh.write("\n")

    signal.signal(signal.SIGUSR1, dump)
    return signet_main(sys.argv[3:])


def _follow_peak(into: list[str], interval: float = 0.5) -> None:
    """Keep the allocation sites of the largest heap seen, sampled every ``interval``
    (a snapshot whenever traced memory grew 10% past the last one): what a burst holds."""
    kept = 0
    while True:
        time.sleep(interval)
        current, _ = tracemalloc.get_traced_memory()
        if current > kept * 1.1:
            into[:] = _top_allocations()
            kept = current


def _top_allocations() -> list[str]:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB)"]
    for title, key, depth in (("by line", "lineno", 1), ("by traceback", "traceback", 10)):
        lines.append(f"## top 25 {title}")
        for stat in snapshot.statistics(key)[:25]:
            lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks")
            lines.extend(f"    {entry}" for entry in stat.traceback.format()[-depth:])
    return lines


def _debugmallocstats_to(fd: int) -> None:
    """``sys._debugmallocstats`` writes to the C stderr; point that at ``fd`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())

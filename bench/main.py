"""``python -m bench [--quick] [--only NAME ...]``: run the figures, write JSON, print a table.

One local control plane (etcd + kube-apiserver, no controller manager), one KMS emulator
process and the operator as a subprocess; see bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import noise
from bench.certmanager import certmanager_phase, certmanager_rows
from bench.crdcost import crdcost_phase, crdcost_rows
from bench.figures import issuance_phase, memory_phase, storm_phase
from bench.hsm import hsm_phase
from bench.kube import Kube
from bench.podcerts import podcert_phase
from bench.procs import ROOT, SOURCE, KmsEmulator, Operator, py_spy_binary
from bench.rotation import rotation_phase
from bench.sharding import sharding_phase, sharding_rows
from bench.signers import softhsm_token
from bench.windows import ROUNDS, Env, Sizes, kms_keys
from signet_dev import LocalControlPlane, tools_bin

FIGURES = (
    "throughput", "latency", "memory", "restart", "storm", "kms", "podcerts", "rotation",
    "certmanager", "sharding", "crdcost",
)  # fmt: skip
STANDALONE = ("signers", "hsm")
"""Figures run only when named: ``signers`` (no cluster: both backends' signers) and
``hsm`` (issuance through the operator, Cloud KMS against a SoftHSM2 issuer)."""
SIZE_OPTIONS = (
    "throughput",
    "latency-runs",
    "memory",
    "unrelated",
    "storm",
    "pcr-latency-runs",
    "pcr-throughput",
    "pcr-memory",
    "rounds",
    "rotation",
    "certmanager",
    "certmanager-large",
    "crdcost",
)
RESULTS = Path(__file__).resolve().parent / "results"
SCALE_CERTIFICATES = 100_000
"""Ready Certificates of the scale run's memory and restart figures (`make bench SCALE=1`)."""
SCALE_SHARDED = 10_000
"""Certificates the scale run issues with 1, 2 and 3 sharded replicas."""
SCALE_FIGURES = ("memory", "restart", "sharding")


def machine(kube: Kube) -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kubernetes": kube.server_version(),
        "kopf": importlib.metadata.version("kopf"),
        "kubernetes_client": importlib.metadata.version("kubernetes"),
        "load_average_at_start": list(os.getloadavg()),
    }


def memory_target_mib(certificates: int) -> int:
    """RSS and peak targets: 200 MiB up to the default 10,000 Certificates, 1 GiB at the
    scale run's 100,000."""
    return 200 if certificates <= 10_000 else 1024


def settle_target_s(certificates: int) -> int:
    """Seconds from a restart until idle: 30 up to 10,000, 120 at the scale run."""
    return 30 if certificates <= 10_000 else 120


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """(figure, measure, value, target, met) rows for the table and the JSON."""
    rows: list[dict[str, Any]] = []

    def add(figure: str, measure: str, value: Any, target: str, met: bool | None) -> None:
        rows.append(
            {"figure": figure, "measure": measure, "value": value, "target": target, "met": met}
        )

    def span(spread: dict[str, Any]) -> str:
        return f"{spread['min']:g}-{spread['max']:g}"

    if t := figures.get("throughput"):
        n, rounds = t["certificates"], t["rounds"]
        add("throughput", f"operator s for {n}, median of {rounds}", t["operator_s"], "", None)
        add("throughput", "  operator windows s", span(t["operator_windows_s"]), "", None)
        add("throughput", "floor s, median", t["floor_s"], "", None)
        add("throughput", "  floor windows s", span(t["floor_windows_s"]), "", None)
        add(
            "throughput", "ratio of medians operator/floor", t["ratio"], "<= 1.5", t["ratio"] <= 1.5
        )
        add("throughput", "  per-pair ratios", span(t["pair_ratios"]), "", None)
        add("throughput", "floor s, Certificates pre-created", t["floor_precreated_s"], "", None)
        add("throughput", "ratio to that floor", t["ratio_to_precreated_floor"], "", None)
        gets = t["certificate_gets_per_certificate"]
        add("throughput", "Certificate GETs per certificate, worst", gets, "0", gets == 0)
    if lat := figures.get("latency"):
        runs = lat["runs"] * lat["rounds"]
        add("latency", f"p50 ms ({runs} runs)", lat["p50_ms"], "<= 100", lat["p50_ms"] <= 100)
        add("latency", "  rounds' p50 ms", span(lat["rounds_p50_ms"]), "", None)
        add("latency", f"p99 ms ({runs} runs)", lat["p99_ms"], "<= 500", lat["p99_ms"] <= 500)
        add("latency", "  rounds' p99 ms", span(lat["rounds_p99_ms"]), "", None)
    if mem := figures.get("memory"):
        restarts = mem.get("after_restart_rss_mib")
        rss = restarts["median"] if restarts else mem["after_restart"]["rss_mib"]
        peak = max(mem["after_cold_issuance"]["hwm_mib"], mem["after_restart"]["hwm_mib"])
        n = mem["certificates"]
        limit = memory_target_mib(n)
        label = "(median after restarts)" if restarts else "(after restart)"
        add("memory", f"RSS MiB, {n} Ready {label}", rss, f"<= {limit}", rss <= limit)
        if restarts:
            add("memory", "  after each restart", span(restarts), "", None)
        add("memory", "RSS MiB before any Certificate", mem["before_any"]["rss_mib"], "", None)
        add("memory", "KiB per Ready Certificate", mem["kib_per_certificate"], "", None)
        add(
            "memory", "RSS MiB after cold issuance", mem["after_cold_issuance"]["rss_mib"], "", None
        )
        add("memory", "peak VmHWM MiB", peak, f"<= {limit}", peak <= limit)
        for name, value in mem["control_plane"].items():
            add("memory", f"{name} RSS MiB at {n}", value, "", None)
        if unrelated := mem.get("unrelated"):
            delta = unrelated["rss_delta_mib"]
            add(
                "memory",
                f"RSS delta MiB, +{unrelated['secrets']} unrelated Secrets",
                delta,
                "~0 (< 5)",
                abs(delta) < 5,
            )
    if r := figures.get("restart"):
        add("restart", "KMS signatures", r["kms_sign_calls"], "0", r["kms_sign_calls"] == 0)
        add("restart", "Secret writes", r["secrets_changed"], "0", r["secrets_changed"] == 0)
        add("restart", "status writes", r["certificate_status_writes"], "0", None)
        add("restart", "Event writes", r["event_writes"], "0", r["event_writes"] == 0)
        idle, limit = r["idle_after_spawn_s"], settle_target_s(r["certificates"])
        add(
            "restart",
            f"s until idle (median of {r['rounds']})",
            idle,
            f"<= {limit}",
            idle <= limit,
        )
        add("restart", "  each restart s", span(r["idle_after_spawn_spread_s"]), "", None)
        add("restart", "  CPU s: operator / apiserver", _cpu(r), "", None)
        for source, other in r.get("other_sources", {}).items():
            name = Path(source).parent.name or source
            writes = other["kms_sign_calls"] + other["secrets_changed"]
            add("restart", f"  {name[:24]}: signatures + Secret writes", writes, "0", writes == 0)
            add("restart", f"  {name[:24]}: s until idle", other["idle_after_spawn_s"], "", None)
            add("restart", "    each restart s", span(other["idle_after_spawn_spread_s"]), "", None)
            add("restart", "    CPU s: operator / apiserver", _cpu(other), "", None)
    if s := figures.get("renewal_storm"):
        limit = s["sign_qps_limit"]
        peak = s["kms_max_signs_in_any_1s"]
        add("storm", "max KMS signs in any 1 s", peak, f"<= {limit:g} (+1)", peak <= limit + 1)
        late = s["renewed_late_or_missing"]
        add("storm", "renewed late or missing", late, "0", late == 0 and s["all_renewed"])
        add("storm", "apiserver peak req/s", s["apiserver"]["peak_requests_per_s"], "", None)
    if k := figures.get("kms_efficiency"):
        for phase, value in k["sign_calls_per_certificate"].items():
            add("kms", f"AsymmetricSign per cert ({phase})", value, "1", value == 1)
        for key, value in k["get_public_key_calls_per_issuer_per_process"].items():
            add("kms", f"GetPublicKey per issuer ({key})", value, "1", value == 1)
    if r := figures.get("rotation"):
        n, limit = r["certificates"], r["sign_qps_limit"]
        add("rotation", f"total s, {n} Certificates", r["total_s"], "", r["completed"])
        add("rotation", "  re-issue s (Reissuing to Retiring)", r["reissue_s"], "", None)
        peak = r["kms_max_signs_in_any_1s"]
        add("rotation", "peak KMS signatures in any 1 s", peak, f"<= {limit:g}", peak <= limit)
        per_leaf = r["kms_signs_per_leaf"]
        add("rotation", "KMS signatures per leaf", per_leaf, "1", per_leaf == 1)
        early = r["leaves_written_before_their_anchor"]
        add("rotation", "leaves written before their anchor", early, "0", early == 0)
        api = r["apiserver"]
        add("rotation", "apiserver requests/s, peak", api["peak_requests_per_s"], "", None)
        add("rotation", "apiserver requests/s, mean", api["mean_requests_per_s"], "", None)
    pcr_rows(figures, add, span)
    certmanager_rows(figures, add)
    crdcost_rows(figures, add)
    sharding_rows(figures, add)
    if h := figures.get("hsm_throughput"):
        add(
            "hsm",
            f"Certificates/s, Cloud KMS issuer ({h['certificates']})",
            h["cloudkms_per_s"],
            "",
            None,
        )
        add(
            "hsm",
            f"Certificates/s, SoftHSM2 issuer ({h['certificates']})",
            h["pkcs11_per_s"],
            "",
            None,
        )
    return rows


Add = Callable[[str, str, Any, str, "bool | None"], None]
"""Appends one (figure, measure, value, target, met) row."""


def pcr_rows(figures: dict[str, Any], add: Add, span: Callable[[dict[str, Any]], str]) -> None:
    """The PodCertificateRequest figures' rows (issue 15)."""
    if lat := figures.get("pcr_latency"):
        runs = lat["runs"] * lat["rounds"]
        add("pcr", f"latency p50 ms ({runs} requests)", lat["p50_ms"], "<= 30", lat["p50_ms"] <= 30)
        add("pcr", "  rounds' p50 ms", span(lat["rounds_p50_ms"]), "", None)
        add(
            "pcr",
            f"latency p99 ms ({runs} requests)",
            lat["p99_ms"],
            "<= 150",
            lat["p99_ms"] <= 150,
        )
        add("pcr", "  rounds' p99 ms", span(lat["rounds_p99_ms"]), "", None)
    if t := figures.get("pcr_throughput"):
        n, rounds = t["requests"], t["rounds"]
        add("pcr", f"operator s for {n} at once, median of {rounds}", t["operator_s"], "", None)
        add("pcr", "  operator windows s", span(t["operator_windows_s"]), "", None)
        add("pcr", "floor s, median", t["floor_s"], "", None)
        add("pcr", "  floor windows s", span(t["floor_windows_s"]), "", None)
        add("pcr", "ratio of medians operator/floor", t["ratio"], "<= 1.3", t["ratio"] <= 1.3)
        add("pcr", "  per-pair ratios", span(t["pair_ratios"]), "", None)
    if m := figures.get("pcr_memory"):
        n = m["requests"]
        for when in ("after_restart", "after_issuance"):
            value = m[f"kib_per_request_{when}"]
            measure = f"RSS KiB/request, {n} Issued, {when.replace('_', ' ')}"
            add("pcr", measure, value, "<= 1", value <= 1)
        restart = m["restart"]
        add(
            "pcr",
            "restart: KMS signatures",
            restart["kms_sign_calls"],
            "0",
            restart["kms_sign_calls"] == 0,
        )
        add(
            "pcr",
            "restart: status writes",
            restart["status_writes"],
            "0",
            restart["status_writes"] == 0,
        )
    if k := figures.get("pcr_kms"):
        for phase, value in k["sign_calls_per_request"].items():
            add("kms", f"AsymmetricSign per request ({phase})", value, "1", value == 1)
        for key, value in k["get_public_key_calls_per_issuer_per_process"].items():
            add("kms", f"GetPublicKey per issuer ({key})", value, "1", value == 1)


def _cpu(restarts: dict[str, Any]) -> str:
    """The median CPU seconds of a restart, operator / apiserver."""
    cpu = restarts["cpu_s"]
    return f"{cpu['operator']['median']:g} / {cpu['kube-apiserver']['median']:g}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'figure':<11} {'measure':<46} {'value':>12}  {'target':<12} met"]
    for row in rows:
        met = {True: "yes", False: "NO", None: ""}[row["met"]]
        lines.append(
            f"{row['figure']:<11} {row['measure']:<46} {row['value']!s:>12}  "
            f"{row['target']:<12} {met}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (minutes, not an hour)")
    p.add_argument(
        "--scale",
        action="store_true",
        help=f"the long scale run: memory and restarts at {SCALE_CERTIFICATES:,}, "
        f"sharding at {SCALE_SHARDED:,} (default --only {' '.join(SCALE_FIGURES)})",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=FIGURES + STANDALONE,
        help="run only these (repeatable)",
    )
    p.add_argument(
        "--signer-count", type=int, help="signatures per run of the signers figure (2000)"
    )
    p.add_argument("--output", type=Path, default=RESULTS, help="folder for the JSON result")
    p.add_argument("--profile", action="store_true", help="py-spy the operator in each phase")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the operator under tracemalloc and dump allocation sites in the memory phase",
    )
    p.add_argument(
        "--mallocstats",
        action="store_true",
        help="like --tracemalloc without tracing: only pymalloc's arena statistics (cheap)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, profiles)")
    p.add_argument(
        "--restart-source",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also restart the operator of this source tree (a folder holding signet) in "
        "every restart round, in turn with the harness's own (repeatable)",
    )
    for name in SIZE_OPTIONS:
        p.add_argument(f"--{name}", type=int, help=f"override the {name} size")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < ROUNDS:
        p.error(f"--rounds must be at least {ROUNDS}: a median and a spread need three")
    return args


def run_phases(
    env: Env,
    sizes: Sizes,
    only: set[str],
    figures: dict[str, Any],
    hsm_module: str | None = None,
) -> dict[str, float]:
    """Run the phases ``only`` asks for into ``figures``; each phase's wall seconds."""
    phases: dict[str, float] = {}

    def phase(name: str, note: str, run: Callable[[], dict[str, Any]]) -> None:
        print(f"  {note} ...", flush=True)
        start = time.perf_counter()
        figures.update(run())
        phases[name] = round(time.perf_counter() - start, 1)

    if only & {"throughput", "latency", "kms"}:
        phase(
            "issuance",
            "issuance: throughput, latency, KMS efficiency",
            lambda: issuance_phase(env, sizes, only),
        )
    if only & {"memory", "restart"}:
        phase(
            "memory",
            f"memory/restart with {sizes.memory} Certificates",
            lambda: memory_phase(env, sizes, only),
        )
    if "storm" in only:
        phase(
            "storm",
            f"renewal storm with {sizes.storm} Certificates",
            lambda: {"renewal_storm": storm_phase(env, sizes)},
        )
    if "podcerts" in only:
        phase(
            "podcerts",
            "pod certificates: latency, throughput, memory",
            lambda: podcert_phase(env, sizes),
        )
    if "rotation" in only:
        phase(
            "rotation",
            f"CA rotation of {sizes.rotation} Certificates at --sign-qps {sizes.rotation_qps:g}",
            lambda: rotation_phase(env, sizes),
        )
    if "certmanager" in only:
        phase(
            "certmanager",
            f"side by side with cert-manager: {sizes.certmanager} and "
            f"{sizes.certmanager_large} Certificates",
            lambda: certmanager_phase(env, sizes),
        )
    if "crdcost" in only:
        phase(
            "crdcost",
            f"apiserver CPU of {sizes.crdcost} Certificate creates, Signet's CRD and "
            "cert-manager's",
            lambda: crdcost_phase(env, sizes),
        )
    if "sharding" in only:
        phase(
            "sharding",
            f"sharding: {sizes.throughput} Certificates with 1, 2, 3 replicas; one killed",
            lambda: sharding_phase(env, sizes),
        )
    if "hsm" in only and hsm_module is not None:
        module = hsm_module
        phase(
            "hsm",
            f"HSM issuance: {sizes.throughput} Certificates, Cloud KMS vs SoftHSM2",
            lambda: hsm_phase(env, sizes, module),
        )
    return phases


def _signers(args: argparse.Namespace) -> None:
    """The backends' micro-benchmark (no cluster): printed, and written as its own JSON."""
    from bench.signers import signers_figure

    count = args.signer_count or (500 if args.quick else 2000)
    figure = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
        "cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "signatures_per_run": count,
        "signers": signers_figure(count),
        "load_average_at_end": list(os.getloadavg()),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.output / f"{stamp}-signers.json"
    path.write_text(json.dumps(figure, indent=2) + "\n")
    print(f"\nresults: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        py_spy_binary()  # fail now, not after the first phase's setup
    only = set(args.only or (SCALE_FIGURES if args.scale else FIGURES))
    if "signers" in only:
        only.discard("signers")
        _signers(args)
        if not only:
            return 0
    if "kms" in only and not only & {"throughput", "latency"}:
        only.add("latency")
    sizes = Sizes.for_mode(args.quick)
    if args.scale:
        sizes.memory, sizes.throughput, sizes.unrelated = SCALE_CERTIFICATES, SCALE_SHARDED, 0
    for option in SIZE_OPTIONS:
        name = option.replace("-", "_")
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    workdir = Path(tempfile.mkdtemp(prefix="signet-bench-"))
    hsm_token = contextlib.ExitStack()
    # the token first: the operator's environment is taken when it is made
    hsm_module = hsm_token.enter_context(softhsm_token()) if "hsm" in only else None
    started = datetime.datetime.now(datetime.UTC)
    figures: dict[str, Any] = {}
    kms = KmsEmulator(workdir, kms_keys(sizes.rounds))
    tools = ROOT / ".tools" / "bin"  # also when benchmarking a snapshot of the source
    plane = LocalControlPlane(
        bin_dir=tools if (tools / "kube-apiserver").exists() else tools_bin(),
        with_controller_manager=False,
        extra_apiserver_args=["--profiling=true"] if args.profile else [],
    )
    operator: Operator | None = None
    phases: dict[str, float] = {}
    try:
        plane.start()
        # The harness's aiohttp clients (the operator's own login functions) read it.
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        kube = Kube(plane.kubeconfig)
        info = machine(kube)
        # the CRDs that go with the operator source under test
        kube.apply_crds(crds if (crds := SOURCE.parent / "crds").is_dir() else ROOT / "crds")
        kms.start()
        operator = Operator(plane.kubeconfig, kms.address, workdir)
        if args.tracemalloc or args.mallocstats:
            operator.tracemalloc_out = workdir / "tracemalloc.txt"
            operator.trace = args.tracemalloc
        pids = {name: plane.pid_of(name) for name in ("kube-apiserver", "etcd")}
        env = Env(
            kube,
            kms,
            operator,
            workdir,
            profile=args.profile,
            control_plane_pids=pids,
            restart_sources=tuple(source.resolve() for source in args.restart_source),
        )
        mode = "scale" if args.scale else "quick" if args.quick else "full"
        print(f"signet bench: {mode} {sorted(only)} in {workdir}")
        phases = run_phases(env, sizes, only, figures, hsm_module)
        info["load_average_at_end"] = list(os.getloadavg())
        kube.close()
    finally:
        if operator is not None:
            operator.stop()
        kms.stop()
        plane.stop()
        hsm_token.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = targets(figures)
    judged = noise.verdict(figures)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "mode": "scale" if args.scale else "quick" if args.quick else "full",
        "only": sorted(only),
        "sizes": vars(sizes),
        "phases_s": phases,
        "machine": info,
        "figures": figures,
        "targets": rows,
        "noise": judged,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    load = info["load_average_at_start"]
    print(
        f"\n{info['cores']} cores {info['cpu_model']}, Python {info['python']}, "
        f"Kubernetes {info['kubernetes']}, kopf {info['kopf']}, load {load[0]:.1f} at start"
    )
    print(table(rows))
    for note in judged["notes"]:
        print(f"note: {note}")
    print(noise.verdict_line(judged))
    print(f"\nresults: {path}" + (f"\nwork folder kept: {workdir}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The six figures. Each phase returns plain dicts that go straight into the JSON result.

Phases share one control plane and one KMS emulator; each starts the operator scoped to
its own namespaces (``--namespace``) so the objects of one phase never cost the next.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import math
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.kube import CertificateWatch, CertKey, Kube, Obj, certificate_body, create_certificates
from bench.procs import (
    GET_PUBLIC_KEY,
    SIGN,
    CpuMeter,
    KmsEmulator,
    Operator,
    py_spy,
    summarize_collapsed,
)
from signet.controller.kubeapi import KubeApi
from signet.kms.cloudkms import CloudKmsSigner, close_client, create_client
from signet.kms.limiter import SignLimiter
from signet.secretformat import layout
from signet_dev import metrics

# The operator's defaults (signet run): reconcile workers, signs in flight, API threads.
OPERATOR_WORKERS = 32
OPERATOR_SIGNS = 32
OPERATOR_API_CONNECTIONS = 16
KMS_KEYS = ("throughput", "latency", "floor", "memory", "storm")


@dataclass
class Sizes:
    throughput: int
    latency_runs: int
    memory: int
    unrelated: int
    unrelated_kib: int
    storm: int
    storm_qps: float

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(100, 20, 1_000, 1_000, 100, 200, 50.0)
        return cls(500, 50, 10_000, 10_000, 100, 2_000, 50.0)


@dataclass
class Env:
    kube: Kube
    kms: KmsEmulator
    operator: Operator
    workdir: Path
    profile: bool
    """Sample the operator with py-spy during each timed phase."""
    control_plane_pids: dict[str, int]
    """kube-apiserver and etcd, for the CPU accounting of timed windows."""

    def spy(self, name: str) -> Path | None:
        return self.workdir / f"py-spy-{name}.txt" if self.profile else None


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _profile_summary(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {"file": str(path), **summarize_collapsed(path)}


@contextmanager
def _watch(env: Env, namespaces: Sequence[str]) -> Iterator[CertificateWatch]:
    watch = CertificateWatch(env.kube, namespaces).start()
    try:
        yield watch
    finally:
        watch.stop()


def _setup_namespace(env: Env, namespace: str, key: str | None) -> None:
    env.kube.ensure_namespace(namespace)
    if key is not None:
        env.kube.create_issuer(namespace, "ca", env.kms.versions[key])


# -- 1, 2, 6: throughput, latency, KMS efficiency ------------------------------------------


def issuance_phase(env: Env, sizes: Sizes, only: set[str]) -> dict[str, Any]:
    """Figures 1 (throughput vs floor), 2 (latency) and 6 (KMS calls), one operator life."""
    tput_ns, lat_ns, floor_ns = "bench-tput", "bench-lat", "bench-floor"
    results: dict[str, Any] = {}
    _setup_namespace(env, tput_ns, "throughput")
    _setup_namespace(env, lat_ns, "latency")
    started_wall = time.time()
    env.operator.start_for([tput_ns, lat_ns])
    env.kube.wait_issuer_ready(tput_ns, "ca")
    env.kube.wait_issuer_ready(lat_ns, "ca")
    time.sleep(1)  # let the issuers' first reconcile settle before timing anything
    signs_per_cert: dict[str, float] = {}
    if "throughput" in only:
        results["throughput"] = _throughput(env, sizes.throughput, tput_ns, floor_ns)
        signs_per_cert["throughput"] = results["throughput"].pop("_signs_per_certificate")
    if "latency" in only:
        results["latency"] = _latency(env, sizes.latency_runs, lat_ns)
        signs_per_cert["latency"] = results["latency"].pop("_signs_per_certificate")
    env.operator.stop()
    stopped_wall = time.time()
    results["kms_efficiency"] = {
        "sign_calls_per_certificate": signs_per_cert,
        "get_public_key_calls_per_issuer_per_process": {
            key: env.kms.count(GET_PUBLIC_KEY, key=key, since=started_wall, until=stopped_wall)
            for key in ("throughput", "latency")
        },
        "issuer_bootstrap_signs": {
            key: 1 for key in ("throughput", "latency")
        },  # self-signed CA: one AsymmetricSign each, excluded from the per-certificate figure
    }
    return results


def _throughput(env: Env, n: int, namespace: str, floor_ns: str) -> dict[str, Any]:
    names = [f"tput-{i:05d}" for i in range(n)]
    keys = [(namespace, name) for name in names]
    with _watch(env, [namespace, floor_ns]) as watch:
        _wait_api_quiet(env)
        since = time.time()
        expect_s = n / 150
        with (
            _window(env, "throughput", expect_s) as spent,
            py_spy(env.operator.pid, spy := env.spy("throughput")),
        ):
            t0 = time.perf_counter()
            create_s = env.kube.create_certificates_at_once(
                [certificate_body(namespace, name) for name in names]
            )
            done = watch.wait(lambda: watch.count_ready(keys) == n, timeout=120 + n * 0.5)
            if not done:
                raise TimeoutError(f"only {watch.count_ready(keys)}/{n} Certificates Ready")
            operator_s = max(watch.ready_at[k] for k in keys) - t0
        until = time.time()
        signs = env.kms.count(SIGN, key="throughput", since=since, until=until)
        wrote = env.kube.certificate_and_secret(namespace, names[0])
        floor = _floor(env, watch, n, floor_ns, wrote, precreated=False)
        precreated = _floor(env, watch, n, floor_ns, wrote, precreated=True)
    return {
        "certificates": n,
        "create_s": round(create_s, 2),
        "operator_s": round(operator_s, 2),
        "operator_per_s": round(n / operator_s, 1),
        "operator_window": spent,
        "floor_s": round(floor["seconds"], 2),
        "floor_per_s": round(n / floor["seconds"], 1),
        "floor_window": floor["window"],
        "ratio": round(operator_s / floor["seconds"], 2),
        "floor_precreated_s": round(precreated["seconds"], 2),
        "floor_precreated_window": precreated["window"],
        "ratio_to_precreated_floor": round(operator_s / precreated["seconds"], 2),
        "concurrency": {
            "workers": OPERATOR_WORKERS,
            "signs": OPERATOR_SIGNS,
            "api_connections": OPERATOR_API_CONNECTIONS,
        },
        "profile": _profile_summary(spy),
        "_signs_per_certificate": round(signs / n, 3),
    }


@contextmanager
def _window(env: Env, name: str, expect_s: float) -> Iterator[dict[str, Any]]:
    """Fill the yielded dict with the CPU seconds each process spent in the block and the
    apiserver requests it served (by verb and resource; the harness's watch included).
    With ``--profile``, also a Go CPU profile of the apiserver over the block's first
    ``expect_s`` seconds (``apiserver-<name>.pprof``, for ``go tool pprof``)."""
    profiler = None
    if env.profile:
        out = env.workdir / f"apiserver-{name}.pprof"
        seconds = max(1, int(expect_s))
        profiler = threading.Thread(
            target=lambda: out.write_bytes(env.kube.apiserver_profile(seconds)), daemon=True
        )
        profiler.start()
    pids = {
        "operator": env.operator.pid,
        "kms_emulator": env.kms.pid,
        "harness": os.getpid(),
        **env.control_plane_pids,
    }
    meter = CpuMeter(pids)
    before = env.kube.apiserver_requests()
    meter.start()
    spent: dict[str, Any] = {}
    yield spent
    spent["cpu_s"] = meter.stop()
    if profiler is not None:
        profiler.join()
    after = env.kube.apiserver_requests()
    requests = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
    ranked = sorted(((k, v) for k, v in requests.items() if v), key=lambda kv: -kv[1])
    spent["requests"] = dict(ranked)


def _floor(
    env: Env,
    watch: CertificateWatch,
    n: int,
    namespace: str,
    wrote: tuple[Obj, Obj],
    *,
    precreated: bool,
) -> dict[str, Any]:
    """The same end state by the shortest path: per Certificate one P-256 key, one
    signature, one Secret create and one status patch, at the operator's concurrency.
    ``wrote`` is a Certificate and Secret the operator wrote in this run: the floor's
    Secrets and statuses have the same fields and sizes, since the apiserver's cost of a
    write grows with what it carries.

    By default the floor starts where the operator's run starts: its Certificates are
    created at once by the same call, inside the timed window, and the script takes each
    one as its POST returns (it needs no watch: it made them). ``precreated`` is the floor
    of the first two rounds: Certificates created before the clock starts, so the floor
    skips the 500 creates the operator's window pays for."""
    env.kube.ensure_namespace(namespace)
    prefix = "floorpre" if precreated else "floor"
    bodies = [certificate_body(namespace, f"{prefix}-{i:05d}", issuer="none") for i in range(n)]
    if precreated:
        env.kube.parallel(env.kube.create_certificate, bodies)
    _wait_api_quiet(env)
    with _window(env, prefix, n / 250) as spent:
        seconds = asyncio.run(
            _floor_async(
                env, bodies, env.kms.versions["floor"], watch, wrote, create=not precreated
            )
        )
    return {"seconds": seconds, "window": spent}


def _wait_api_quiet(env: Env, timeout: float = 60.0) -> None:
    """Until a second passes without a write to the apiserver: the operator posts its Events
    after the Certificates are Ready, and the floor's clock must not pay for them."""
    deadline = time.monotonic() + timeout
    before = env.kube.apiserver_requests()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = env.kube.apiserver_requests()
        writes = sum(
            after[k] - before.get(k, 0.0)
            for k in after
            if k.split(" ")[0] in ("POST", "PUT", "PATCH", "DELETE")
        )
        if writes == 0:
            return
        before = after
    raise TimeoutError("the apiserver kept taking writes; the floor would not run alone")


async def _floor_async(
    env: Env,
    bodies: list[Obj],
    key_version: str,
    watch: CertificateWatch,
    wrote: tuple[Obj, Obj],
    *,
    create: bool,
) -> float:
    client = create_client(env.kms.address)
    signer = CloudKmsSigner(
        client, key_version, limiter=SignLimiter(max_concurrency=OPERATOR_SIGNS)
    )
    await signer.public_key()
    os.environ["KUBECONFIG"] = str(env.kube.kubeconfig)  # read by the operator's own login
    api = KubeApi(connections=OPERATOR_API_CONNECTIONS)
    certificate, template = wrote
    status = certificate["status"]
    meta = template["metadata"]
    chain_size = len(base64.b64decode(template["data"][layout.TLS_CERT]))
    tbs = b"\x30\x82\x01\x8a" + bytes(390)  # the size of a P-256 leaf's TBSCertificate
    todo: asyncio.Queue[Obj | None] = asyncio.Queue()

    async def worker() -> None:
        while (body := await todo.get()) is not None:
            namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
            key = ec.generate_private_key(ec.SECP256R1())
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            signature = await signer.sign(tbs)
            chain = (tbs + signature).ljust(chain_size, b"\0")
            owner = {**meta["ownerReferences"][0], "name": name}
            owner["uid"] = body["metadata"].get("uid", owner["uid"])
            secret = {
                "metadata": {
                    "name": f"{name}-tls",
                    "labels": {
                        **meta["labels"],
                        layout.CERTIFICATE_LABEL: layout.certificate_label_value(name),
                    },
                    "annotations": {**meta["annotations"], layout.CERTIFICATE_NAME: name},
                    "ownerReferences": [owner],
                },
                "type": template["type"],
                "data": {
                    **template["data"],
                    layout.TLS_CERT: base64.b64encode(chain).decode(),
                    layout.TLS_KEY: base64.b64encode(key_pem).decode(),
                },
            }
            await api.create_secret(namespace, secret)
            await api.patch_status("Certificate", namespace, name, status)

    keys = [(body["metadata"]["namespace"], body["metadata"]["name"]) for body in bodies]
    t0 = time.perf_counter()
    try:
        workers = [asyncio.create_task(worker()) for _ in range(OPERATOR_WORKERS)]
        if create:
            await create_certificates(bodies, created=todo.put_nowait)
        else:
            for body in bodies:
                todo.put_nowait(body)
        for _ in workers:
            todo.put_nowait(None)
        await asyncio.gather(*workers)
        done = await asyncio.to_thread(
            watch.wait, lambda: watch.count_ready(keys) == len(keys), 60.0
        )
        if not done:
            raise TimeoutError("floor Certificates not all seen Ready")
        return max(watch.ready_at[k] for k in keys) - t0
    finally:
        await api.close()
        await close_client(client)


def _latency(env: Env, runs: int, namespace: str) -> dict[str, Any]:
    samples: list[float] = []
    with _watch(env, [namespace]) as watch:
        since = time.time()
        with py_spy(env.operator.pid, spy := env.spy("latency")):
            for i in range(runs):
                name = f"lat-{i:04d}"
                key = (namespace, name)
                env.kube.create_certificate(certificate_body(namespace, name))
                created = time.perf_counter()
                if not watch.wait(lambda key=key: key in watch.ready_at, timeout=30):  # type: ignore[misc]
                    raise TimeoutError(f"{name} not Ready within 30s")
                samples.append(watch.ready_at[key] - created)
                time.sleep(0.3)  # idle between runs: the figure is for a quiet operator
        signs = env.kms.count(SIGN, key="latency", since=since)
    return {
        "runs": runs,
        "p50_ms": _ms(_percentile(samples, 50)),
        "p90_ms": _ms(_percentile(samples, 90)),
        "p99_ms": _ms(_percentile(samples, 99)),
        "max_ms": _ms(max(samples)),
        "mean_ms": _ms(statistics.fmean(samples)),
        "samples_ms": [_ms(s) for s in samples],
        "profile": _profile_summary(spy),
        "_signs_per_certificate": round(signs / runs, 3),
    }


# -- 3, 4: memory and restart ----------------------------------------------------------


def _memory_namespaces(n: int) -> list[str]:
    return [f"bench-mem-{i}" for i in range(10 if n >= 5_000 else 4)]


def memory_phase(env: Env, sizes: Sizes, only: set[str]) -> dict[str, Any]:
    """Figures 3 and 4: N Certificates created while the operator is down, issued from a
    cold start, then a restart over them, then unrelated large Secrets elsewhere."""
    n = sizes.memory
    namespaces = _memory_namespaces(n)
    for namespace in namespaces:
        _setup_namespace(env, namespace, "memory")
    items = [(namespaces[i % len(namespaces)], f"mem-{i:05d}") for i in range(n)]
    create_s = env.kube.parallel(
        lambda item: env.kube.create_certificate(certificate_body(*item)), items
    )
    keys: list[CertKey] = list(items)
    results: dict[str, Any] = {}
    with _watch(env, namespaces) as watch:
        spawned = env.operator.start_for(namespaces)
        with py_spy(env.operator.pid, spy := env.spy("cold-issuance")):
            if not watch.wait(lambda: watch.count_ready(keys) == n, timeout=180 + n * 0.25):
                raise TimeoutError(f"only {watch.count_ready(keys)}/{n} Certificates Ready")
        issued_s = max(watch.ready_at[k] for k in keys) - spawned
    idle_s = _wait_idle(env.operator, namespaces, n, timeout=120)
    results["cold_issuance"] = {
        "certificates": n,
        "created_while_stopped_s": round(create_s, 1),
        "all_ready_after_start_s": round(issued_s, 1),
        "per_s": round(n / issued_s, 1),
        "profile": _profile_summary(spy),
    }
    memory: dict[str, Any] = {"certificates": n, "after_cold_issuance": env.operator.memory()}
    memory["after_cold_issuance"]["idle_after_s"] = round(idle_s, 1)
    if "restart" in only:
        results["restart"] = _restart(env, namespaces, keys)
    memory["after_restart"] = env.operator.memory()
    env.operator.dump_allocations()
    memory["unrelated"] = _unrelated(env, sizes)
    results["memory"] = memory
    env.operator.stop()
    return results


def _observed(text: str, namespaces: set[str]) -> int:
    count = 0
    for labels, value in metrics.samples(text, "signet_certificate_ready_status"):
        if value == 1.0 and labels.get("condition") == "True":
            count += labels.get("namespace") in namespaces
    return count


def _wait_idle(
    operator: Operator, namespaces: Sequence[str], n: int, timeout: float, poll: float = 1.0
) -> float:
    """Seconds until queue depth is 0 and every Certificate has a Ready series."""
    start = time.perf_counter()
    wanted = set(namespaces)
    while time.perf_counter() - start < timeout:
        text = operator.metrics(timeout=10)
        if metrics.total(text, "signet_workqueue_depth") == 0 and _observed(text, wanted) >= n:
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError(f"operator not idle after {timeout}s")


def _restart(env: Env, namespaces: list[str], keys: list[CertKey]) -> dict[str, Any]:
    n = len(keys)
    certs_before = env.kube.certificate_versions(namespaces)
    secrets_before = env.kube.secret_versions(namespaces)
    env.operator.stop()
    since = time.time()
    spawned = env.operator.start_for(namespaces)
    metrics_up_s = time.perf_counter() - spawned
    with py_spy(env.operator.pid, spy := env.spy("restart")):
        idle_s = _wait_idle(env.operator, namespaces, n, timeout=300, poll=0.5)
    idle_total_s = time.perf_counter() - spawned
    time.sleep(3)  # anything still in flight lands in the comparisons below
    certs_after = env.kube.certificate_versions(namespaces)
    secrets_after = env.kube.secret_versions(namespaces)
    text = env.operator.metrics(timeout=10)
    return {
        "certificates": n,
        "kms_sign_calls": env.kms.count(SIGN, key="memory", since=since, code=None),
        "kms_get_public_key_calls": env.kms.count(GET_PUBLIC_KEY, key="memory", since=since),
        "secret_writes_metric": metrics.total(text, "signet_secret_writes_total"),
        "secrets_changed": sum(1 for k, v in secrets_after.items() if secrets_before.get(k) != v),
        "certificate_status_writes": sum(
            1 for k, v in certs_after.items() if certs_before.get(k) != v
        ),
        "metrics_up_s": round(metrics_up_s, 2),
        "idle_after_spawn_s": round(idle_total_s, 2),
        "idle_after_metrics_up_s": round(idle_s, 2),
        "profile": _profile_summary(spy),
    }


def _unrelated(env: Env, sizes: Sizes) -> dict[str, Any]:
    m, size = sizes.unrelated, sizes.unrelated_kib * 1024
    namespaces = [f"bench-noise-{i}" for i in range(10 if m >= 5_000 else 4)]
    for namespace in namespaces:
        env.kube.ensure_namespace(namespace)
    before = env.operator.memory()
    items = [(namespaces[i % len(namespaces)], f"blob-{i:05d}") for i in range(m)]
    create_s = env.kube.parallel(
        lambda item: env.kube.create_unrelated_secret(item[0], item[1], size), items
    )
    time.sleep(5)  # any watch traffic they cause has arrived by now
    after = env.operator.memory()
    return {
        "secrets": m,
        "size_kib": sizes.unrelated_kib,
        "create_s": round(create_s, 1),
        "before": before,
        "after": after,
        "rss_delta_mib": round(after["rss_mib"] - before["rss_mib"], 1),
    }


# -- 5: renewal storm ------------------------------------------------------------------


def _storm_timing(n: int) -> tuple[str, str, float]:
    """duration, renewBefore, seconds from issuance to renewal. renewBefore is over half
    the lifetime, which switches off Signet's per-UID jitter, so every Certificate comes
    due exactly ``due`` seconds after it was issued."""
    if n <= 500:
        return "2m", "90s", 30.0
    return "5m", "3m", 120.0


def storm_phase(env: Env, sizes: Sizes) -> dict[str, Any]:
    n, qps = sizes.storm, sizes.storm_qps
    namespace = "bench-storm"
    duration, renew_before, due_after = _storm_timing(n)
    _setup_namespace(env, namespace, "storm")
    names = [f"storm-{i:05d}" for i in range(n)]
    keys = [(namespace, name) for name in names]
    with _watch(env, [namespace]) as watch:
        # First issuance without the rate limit, so renewals come due within seconds.
        env.operator.start_for([namespace])
        env.kube.wait_issuer_ready(namespace, "ca")
        env.kube.parallel(
            lambda name: env.kube.create_certificate(
                certificate_body(namespace, name, duration=duration, renew_before=renew_before)
            ),
            names,
        )
        if not watch.wait(lambda: watch.count_ready(keys) == n, timeout=120 + n * 0.5):
            raise TimeoutError("storm Certificates not all issued")
        first = {k: watch.revisions[k][min(watch.revisions[k])] for k in keys}
        issue_times = [t for t, _ in first.values()]
        env.operator.stop()
        env.operator.start_for([namespace], [f"--sign-qps={qps:g}"])
        since = time.time()
        sampler = _ApiSampler(env.kube)
        sampler.start()
        renewed = watch.wait(
            lambda: all(len(watch.revisions.get(k, {})) >= 2 for k in keys),
            timeout=due_after + n / qps * 2 + 90,
        )
        sampler.stop()
        renewal_wall = {
            k: min(t for rev, (t, _) in watch.revisions[k].items() if rev > min(watch.revisions[k]))
            for k in keys
            if len(watch.revisions.get(k, {})) >= 2
        }
    env.operator.stop()
    offset = time.time() - time.perf_counter()  # perf_counter stamps -> epoch
    late = 0
    for key, (_, not_after) in first.items():
        at = renewal_wall.get(key)
        expiry = datetime.datetime.fromisoformat(not_after.replace("Z", "+00:00")).timestamp()
        if at is None or at + offset >= expiry:
            late += 1
    signs = sorted(env.kms.times(SIGN, key="storm", since=since))
    return {
        "certificates": n,
        "sign_qps_limit": qps,
        "duration": duration,
        "renew_before": renew_before,
        "first_issuance_spread_s": round(max(issue_times) - min(issue_times), 1),
        "all_renewed": renewed,
        "renewed": len(renewal_wall),
        "renewed_late_or_missing": late,
        "renewal_window_s": round(max(renewal_wall.values()) - min(renewal_wall.values()), 1)
        if renewal_wall
        else None,
        "kms_signs": len(signs),
        "kms_max_signs_in_any_1s": _max_in_window(signs, 1.0),
        "kms_max_signs_per_1s_bin": _max_per_bin(signs, 1.0),
        "kms_max_signs_per_0_5s_bin": _max_per_bin(signs, 0.5),
        "kms_min_gap_ms": round(min(b - a for a, b in itertools.pairwise(signs)) * 1000, 1)
        if len(signs) > 1
        else None,
        "kms_mean_rate_per_s": round(len(signs) / (max(signs) - min(signs)), 1)
        if len(signs) > 1
        else None,
        "apiserver": sampler.summary(),
    }


def _max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _max_per_bin(times: list[float], width: float) -> int:
    bins: dict[int, int] = {}
    for t in times:
        bins[int(t // width)] = bins.get(int(t // width), 0) + 1
    return max(bins.values(), default=0)


class _ApiSampler:
    """apiserver_request_total once a second: peak request rate and what it was spent on."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._stop = threading.Event()
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._thread = threading.Thread(target=self._run, name="apiserver-sampler", daemon=True)

    def start(self) -> None:
        self._samples.append((time.perf_counter(), self._kube.apiserver_requests()))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._samples.append((time.perf_counter(), self._kube.apiserver_requests()))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._samples.append((time.perf_counter(), self._kube.apiserver_requests()))

    def summary(self) -> dict[str, Any]:
        rates = []
        for (t0, a), (t1, b) in itertools.pairwise(self._samples):
            rates.append((sum(b.values()) - sum(a.values())) / max(t1 - t0, 1e-6))
        first, last = self._samples[0][1], self._samples[-1][1]
        by_kind = {k: last[k] - first.get(k, 0.0) for k in last}
        top = sorted(((k, v) for k, v in by_kind.items() if v > 0), key=lambda kv: -kv[1])
        elapsed = self._samples[-1][0] - self._samples[0][0]
        return {
            "seconds": round(elapsed, 1),
            "peak_requests_per_s": round(max(rates, default=0.0), 1),
            "mean_requests_per_s": round(sum(by_kind.values()) / max(elapsed, 1e-6), 1),
            "requests_by_verb_resource": dict((k, int(v)) for k, v in top[:12]),
            "note": "includes the harness's own watch and one /metrics GET per second",
        }

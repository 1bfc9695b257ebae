"""The Certificate figures (1 to 6). Each phase returns plain dicts that go straight into
the JSON result.

Phases share one control plane and one KMS emulator; each starts the operator scoped to
its own namespaces (``--namespace``) so the objects of one phase never cost the next.
Every timed figure is measured in several windows (issue 19): throughput alternates
operator and floor windows, latency and restart repeat in rounds, and each window records
the machine's state so that `bench.noise` can say whether the windows are comparable.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import noise
from bench.kube import CertificateWatch, CertKey, Kube, Obj, certificate_body, create_certificates
from bench.procs import GET_PUBLIC_KEY, SIGN, Operator, cpu_seconds, proc_memory, py_spy
from bench.windows import (
    OPERATOR_IDLE_CPU,
    Env,
    Sizes,
    ms,
    percentile,
    profile_summary,
    wait_quiet,
    window,
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
DEPTH = "signet_workqueue_depth"
READY = "signet_certificate_ready_status"
LATENCY_PAUSE_S = 0.3
"""Idle time between latency runs: the figure is for a quiet operator, and an issuance's
Event and audit records trail its Ready status by a few milliseconds."""
CERTIFICATE_GETS = "GET certificates"
"""The operator's reads of single Certificates (`Kube.apiserver_requests` key); a pass
reads its Certificate only when the watched body was not kept for it."""


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
    """Figures 1 (throughput vs floor), 2 (latency) and 6 (KMS calls), one operator life.
    Each operator window has a namespace and an Issuer (and KMS key) of its own, all
    resolved before the first window, so every window starts alike: no Certificates yet,
    no trust bundle yet, an issuer already known."""
    rounds = sizes.rounds
    tput_ns = [f"bench-tput-{i}" for i in range(rounds)]
    tput_keys = [f"throughput-{i}" for i in range(rounds)]
    lat_ns = "bench-lat"
    results: dict[str, Any] = {}
    for namespace, key in zip(tput_ns, tput_keys, strict=True):
        _setup_namespace(env, namespace, key)
    _setup_namespace(env, lat_ns, "latency")
    started_wall = time.time()
    env.operator.start_for([*tput_ns, lat_ns])
    for namespace in [*tput_ns, lat_ns]:
        env.kube.wait_issuer_ready(namespace, "ca")
    wait_quiet(env)  # the issuers' first reconcile settles before anything is timed
    signs_per_cert: dict[str, float] = {}
    if "throughput" in only:
        results["throughput"] = _throughput(env, sizes, tput_ns, tput_keys)
        signs_per_cert["throughput"] = results["throughput"].pop("_signs_per_certificate")
    if "latency" in only:
        results["latency"] = _latency(env, sizes.latency_runs, rounds, lat_ns)
        signs_per_cert["latency"] = results["latency"].pop("_signs_per_certificate")
    env.operator.stop()
    stopped_wall = time.time()
    keys = [*(tput_keys if "throughput" in only else []), "latency"]
    results["kms_efficiency"] = {
        "sign_calls_per_certificate": signs_per_cert,
        "get_public_key_calls_per_issuer_per_process": {
            key: env.kms.count(GET_PUBLIC_KEY, key=key, since=started_wall, until=stopped_wall)
            for key in keys
        },
        "issuer_bootstrap_signs": dict.fromkeys(keys, 1),
        # self-signed CA: one AsymmetricSign each, before the windows, so excluded above
    }
    return results


def _throughput(
    env: Env, sizes: Sizes, namespaces: Sequence[str], keys: Sequence[str]
) -> dict[str, Any]:
    """Operator and floor windows alternate (operator first), ``sizes.rounds`` of each, then
    one floor of the first two rounds (Certificates created before its clock). A window's
    objects are deleted before the next window starts, so no window carries the objects of
    the ones before it (the operator's per-Certificate state, the apiserver's watch cache,
    etcd); each window also has a namespace of its own."""
    n, rounds = sizes.throughput, sizes.rounds
    floor_ns = [f"bench-floor-{i}" for i in range(rounds)]
    precreated_ns = "bench-floor-pre"
    operator: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    signs = 0
    wrote: tuple[Obj, Obj] | None = None
    with _watch(env, [*namespaces, *floor_ns, precreated_ns]) as watch:
        for i in range(rounds):
            since = time.time()
            operator.append(_operator_window(env, watch, n, namespaces[i], f"operator-{i}"))
            signs += env.kms.count(SIGN, key=keys[i], since=since, until=time.time())
            if wrote is None:
                wrote = env.kube.certificate_and_secret(namespaces[i], "tput-00000")
            _clear_operator_window(env, namespaces[i])
            floor.append(_floor(env, watch, n, floor_ns[i], wrote, name=f"floor-{i}"))
            _clear_floor_window(env, floor_ns[i])
        assert wrote is not None
        precreated = _floor(env, watch, n, precreated_ns, wrote, name="floor-pre", precreated=True)
    operator_s = [w["seconds"] for w in operator]
    floor_s = [w["seconds"] for w in floor]
    pairs = [o / f for o, f in zip(operator_s, floor_s, strict=True)]
    median_operator = statistics.median(operator_s)
    median_floor = statistics.median(floor_s)
    windows = [w["window"] for pair in zip(operator, floor, strict=True) for w in pair]
    return {
        "certificates": n,
        "rounds": rounds,
        "order": [w["name"] for w in windows],
        "operator_s": round(median_operator, 2),
        "floor_s": round(median_floor, 2),
        "ratio": round(median_operator / median_floor, 2),
        "operator_per_s": round(n / median_operator, 1),
        "floor_per_s": round(n / median_floor, 1),
        "operator_windows_s": noise.spread(operator_s),
        "floor_windows_s": noise.spread(floor_s),
        "pair_ratios": noise.spread(pairs),
        "certificate_gets_per_certificate": max(
            w["certificate_gets_per_certificate"] for w in operator
        ),
        "operator_windows": operator,
        "floor_windows": floor,
        "between_windows": "each window in a namespace of its own; its Certificates, Secrets "
        "and Events deleted before the next (Certificates first, Secrets once the operator "
        "has dropped their Certificates' metrics series)",
        "floor_precreated_s": round(precreated["seconds"], 2),
        "floor_precreated_window": precreated["window"],
        "ratio_to_precreated_floor": round(median_operator / precreated["seconds"], 2),
        "concurrency": {
            "workers": OPERATOR_WORKERS,
            "signs": OPERATOR_SIGNS,
            "api_connections": OPERATOR_API_CONNECTIONS,
        },
        "noise": noise.assess(windows, floor_s, "floor windows (s)"),
        "_signs_per_certificate": round(signs / (n * rounds), 3),
    }


def _operator_window(
    env: Env, watch: CertificateWatch, n: int, namespace: str, name: str
) -> dict[str, Any]:
    """N Certificates created at once in ``namespace``; seconds from the first create to
    the last one seen Ready."""
    names = [f"tput-{i:05d}" for i in range(n)]
    keys = [(namespace, cert) for cert in names]
    bodies = [certificate_body(namespace, cert) for cert in names]
    wait_quiet(env)
    reads = env.kube.apiserver_requests().get(CERTIFICATE_GETS, 0.0)
    with (
        window(env, name, n / 150) as spent,
        py_spy(env.operator.pid, spy := env.spy(name)),
    ):
        t0 = time.perf_counter()
        create_s = env.kube.create_certificates_at_once(bodies)
        seconds = watch.wait_all(keys, timeout=120 + n * 0.5) - t0
    reads = env.kube.apiserver_requests().get(CERTIFICATE_GETS, 0.0) - reads
    return {
        "name": name,
        "seconds": round(seconds, 3),
        "create_s": round(create_s, 2),
        "certificate_gets_per_certificate": round(reads / n, 3),
        "window": spent,
        "profile": profile_summary(spy),
    }


def _ready_series(env: Env, namespace: str) -> int:
    """How many Certificates in ``namespace`` the operator still has a Ready series for."""
    text = env.operator.metrics(timeout=10)
    return sum(
        1
        for labels, _ in metrics.samples(text, READY)
        if labels.get("namespace") == namespace and labels.get("condition") == "True"
    )


def _clear_operator_window(env: Env, namespace: str, timeout: float = 120) -> None:
    """Delete an operator window's objects: Certificates (and Events), then, once the
    operator has forgotten every one of them, their Secrets."""
    wait_quiet(env)  # its Events are posted before they are deleted
    env.kube.delete_window_objects(namespace)
    deadline = time.monotonic() + timeout
    while _ready_series(env, namespace):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the operator still knows Certificates in {namespace}")
        time.sleep(0.2)
    env.kube.delete_signet_secrets(namespace)


def _clear_floor_window(env: Env, namespace: str) -> None:
    """Delete a floor window's objects (a namespace the operator does not watch)."""
    env.kube.delete_window_objects(namespace)
    env.kube.delete_signet_secrets(namespace)


def _floor(
    env: Env,
    watch: CertificateWatch,
    n: int,
    namespace: str,
    wrote: tuple[Obj, Obj],
    *,
    name: str,
    precreated: bool = False,
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
    skips the creates the operator's window pays for."""
    env.kube.ensure_namespace(namespace)
    prefix = "floorpre" if precreated else "floor"
    bodies = [certificate_body(namespace, f"{prefix}-{i:05d}", issuer="none") for i in range(n)]
    if precreated:
        env.kube.parallel(env.kube.create_certificate, bodies)
    wait_quiet(env)
    with window(env, name, n / 250) as spent:
        seconds = asyncio.run(
            _floor_async(
                env, bodies, env.kms.versions["floor"], watch, wrote, create=not precreated
            )
        )
    return {"name": name, "seconds": round(seconds, 3), "window": spent}


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


def _latency(env: Env, runs: int, rounds: int, namespace: str) -> dict[str, Any]:
    """``rounds`` rounds of ``runs`` Certificates, one at a time on an idle operator: from
    the create call returning to the watch event showing it Ready."""
    per_round: list[dict[str, Any]] = []
    samples: list[float] = []
    with _watch(env, [namespace]) as watch:
        since = time.time()
        for r in range(rounds):
            wait_quiet(env)
            round_samples: list[float] = []
            with (
                window(env, f"latency-{r}") as spent,
                py_spy(env.operator.pid, spy := env.spy(f"latency-{r}")),
            ):
                for i in range(runs):
                    name = f"lat-{r}-{i:04d}"
                    key = (namespace, name)
                    env.kube.create_certificate(certificate_body(namespace, name))
                    created = time.perf_counter()
                    round_samples.append(watch.wait_all([key], timeout=30) - created)
                    time.sleep(LATENCY_PAUSE_S)
            samples += round_samples
            per_round.append(latency_round(round_samples, spent, spy))
        signs = env.kms.count(SIGN, key="latency", since=since)
    return latency_summary(runs, samples, per_round, signs)


def latency_round(
    samples: Sequence[float], spent: dict[str, Any], spy: Any = None
) -> dict[str, Any]:
    return {
        "p50_ms": ms(percentile(samples, 50)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)),
        "window": spent,
        "profile": profile_summary(spy),
    }


def latency_summary(
    runs: int, samples: Sequence[float], per_round: Sequence[dict[str, Any]], signs: int
) -> dict[str, Any]:
    """Percentiles over every run of every round (the headline), each round's p50 and
    p99 with their spread, and whether the rounds are comparable (their p50s within
    `noise.SPREAD_LIMIT`, other processes' CPU alike; the load average is recorded, not
    judged: it still decays from the busy phase before)."""
    p50s = [r["p50_ms"] for r in per_round]
    return {
        "runs": runs,
        "rounds": len(per_round),
        "p50_ms": ms(percentile(samples, 50)),
        "p90_ms": ms(percentile(samples, 90)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)),
        "mean_ms": ms(statistics.fmean(samples)),
        "rounds_p50_ms": noise.spread(p50s),
        "rounds_p99_ms": noise.spread([r["p99_ms"] for r in per_round]),
        "per_round": list(per_round),
        "samples_ms": [ms(s) for s in samples],
        "noise": noise.assess([r["window"] for r in per_round], p50s, "rounds' p50 (ms)"),
        "_signs_per_certificate": round(signs / len(samples), 3),
    }


# -- 3, 4: memory and restart ----------------------------------------------------------


def _memory_namespaces(n: int) -> list[str]:
    return [f"bench-mem-{i}" for i in range(10 if n >= 5_000 else 4)]


def memory_phase(env: Env, sizes: Sizes, only: set[str]) -> dict[str, Any]:
    """Figures 3 and 4: N Certificates created while the operator is down, issued from a
    cold start, then ``sizes.rounds`` restarts over them, then unrelated large Secrets
    elsewhere."""
    n = sizes.memory
    namespaces = _memory_namespaces(n)
    for namespace in namespaces:
        _setup_namespace(env, namespace, "memory")
    env.operator.start_for(namespaces)
    _wait_idle(env.operator, namespaces, 0, timeout=120)
    empty = env.operator.memory()  # the same namespaces and Issuers, no Certificate yet
    env.operator.stop()
    items = [(namespaces[i % len(namespaces)], f"mem-{i:05d}") for i in range(n)]
    create_s = env.kube.parallel(
        lambda item: env.kube.create_certificate(certificate_body(*item)), items
    )
    keys: list[CertKey] = list(items)
    results: dict[str, Any] = {}
    with _watch(env, namespaces) as watch:
        spawned = env.operator.start_for(namespaces)
        with py_spy(env.operator.pid, spy := env.spy("cold-issuance")):
            issued_s = watch.wait_all(keys, timeout=180 + n * 0.25) - spawned
    # as long as a restart's: at 100,000 the listings go on well after the last issuance
    idle_s = _wait_idle(env.operator, namespaces, n, timeout=max(120, n / 50))
    results["cold_issuance"] = {
        "certificates": n,
        "created_while_stopped_s": round(create_s, 1),
        "all_ready_after_start_s": round(issued_s, 1),
        "per_s": round(n / issued_s, 1),
        "profile": profile_summary(spy),
    }
    memory: dict[str, Any] = {
        "certificates": n,
        "before_any": empty,
        "after_cold_issuance": env.operator.memory(),
    }
    memory["after_cold_issuance"]["idle_after_s"] = round(idle_s, 1)
    if "restart" in only:
        by_source = _restarts(env, namespaces, keys, sizes.rounds)
        restarts = by_source.pop(HARNESS_SOURCE)
        results["restart"] = _restart_summary(n, restarts)
        if by_source:
            results["restart"]["other_sources"] = {
                source: _restart_summary(n, runs) for source, runs in by_source.items()
            }
        rss = [r["memory"]["rss_mib"] for r in restarts]
        memory["after_restart_rss_mib"] = noise.spread(rss)
    memory["after_restart"] = env.operator.memory()
    held = (
        memory.get("after_restart_rss_mib", {}).get("median") or memory["after_restart"]["rss_mib"]
    )
    memory["kib_per_certificate"] = round((held - empty["rss_mib"]) * 1024 / n, 2)
    memory["control_plane"] = {
        name: proc_memory(pid)["rss_mib"] for name, pid in env.control_plane_pids.items()
    }
    env.operator.dump_allocations()
    if sizes.unrelated:
        memory["unrelated"] = _unrelated(env, sizes)
    results["memory"] = memory
    env.operator.stop()
    return results


def _observed(text: str, namespaces: set[str]) -> int:
    count = 0
    for labels, value in metrics.samples(text, READY):
        if value == 1.0 and labels.get("condition") == "True":
            count += labels.get("namespace") in namespaces
    return count


def _wait_idle(
    operator: Operator, namespaces: Sequence[str], n: int, timeout: float, poll: float = 1.0
) -> float:
    """Seconds until the operator is idle: its work queue empty and its CPU quiet for one
    ``poll`` interval (under `OPERATOR_IDLE_CPU` per second), confirmed by every
    Certificate having a Ready series. The first two are cheap to read (``/proc`` and the
    one depth gauge); the full /metrics that the third needs is read only then: read every
    half second, as the first four rounds did, it took a third of the operator's CPU
    during a restart over 10,000. Returned: the start of the quiet interval."""
    start = time.perf_counter()
    wanted = set(namespaces)
    last_t, last_cpu = start, cpu_seconds(operator.pid)
    while last_t - start < timeout:
        time.sleep(poll)
        now, cpu = time.perf_counter(), cpu_seconds(operator.pid)
        if (
            cpu - last_cpu <= OPERATOR_IDLE_CPU * (now - last_t)
            and metrics.total(operator.metrics_named(DEPTH, timeout=10), DEPTH) == 0
            and _observed(operator.metrics(timeout=30), wanted) >= n
        ):
            return last_t - start
        last_t, last_cpu = now, cpu
    raise TimeoutError(f"operator not idle after {timeout}s")


HARNESS_SOURCE = "harness"


def _restarts(
    env: Env, namespaces: list[str], keys: list[CertKey], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` restarts of the harness's own operator and, in each round, one of each
    ``env.restart_sources`` in turn, so that load on a shared machine falls on every
    source alike. The harness's own runs last: the memory figures read the operator
    that is left."""
    own = env.operator.env
    runs: dict[str, list[dict[str, Any]]] = {str(s): [] for s in env.restart_sources}
    runs[HARNESS_SOURCE] = []
    try:
        for r in range(rounds):
            for source in env.restart_sources:
                env.operator.env = {**own, "PYTHONPATH": str(source)}
                runs[str(source)].append(
                    _restart(env, namespaces, keys, f"restart-{r}-{source.name}")
                )
                runs[str(source)][-1]["memory"] = env.operator.memory()
            env.operator.env = own
            runs[HARNESS_SOURCE].append(_restart(env, namespaces, keys, f"restart-{r}"))
            runs[HARNESS_SOURCE][-1]["memory"] = env.operator.memory()
    finally:
        env.operator.env = own
    return runs


def _restart(env: Env, namespaces: list[str], keys: list[CertKey], name: str) -> dict[str, Any]:
    """One restart over the Ready Certificates: what it signed and wrote, and how long
    until idle; its window runs from the spawn until idle."""
    n = len(keys)
    certs_before = env.kube.certificate_versions(namespaces)
    secrets_before = env.kube.secret_versions(namespaces)
    env.operator.stop()
    since = time.time()
    with window(env, name) as spent:
        spawned = env.operator.start_for(namespaces)
        metrics_up_s = time.perf_counter() - spawned
        with py_spy(env.operator.pid, spy := env.spy(name)):
            # generous: a slow settle is a figure to report against its target, not a lost run
            idle_s = _wait_idle(env.operator, namespaces, n, timeout=max(300, n / 50), poll=0.5)
    idle_total_s = time.perf_counter() - spawned
    time.sleep(3)  # anything still in flight lands in the comparisons below
    certs_after = env.kube.certificate_versions(namespaces)
    secrets_after = env.kube.secret_versions(namespaces)
    # the one counter, not the whole text: at 100,000 that is 600,000 series
    text = env.operator.metrics_named("signet_secret_writes_total", timeout=30)
    return {
        "kms_sign_calls": env.kms.count(SIGN, key="memory", since=since, code=None),
        "kms_get_public_key_calls": env.kms.count(GET_PUBLIC_KEY, key="memory", since=since),
        "secret_writes_metric": metrics.total(text, "signet_secret_writes_total"),
        "secrets_changed": sum(1 for k, v in secrets_after.items() if secrets_before.get(k) != v),
        "certificate_status_writes": sum(
            1 for k, v in certs_after.items() if certs_before.get(k) != v
        ),
        "event_writes": sum(
            count
            for request, count in spent["requests"].items()
            if request in ("POST events", "PATCH events")
        ),
        "metrics_up_s": round(metrics_up_s, 2),
        "idle_after_spawn_s": round(idle_total_s, 2),
        "idle_after_metrics_up_s": round(idle_s, 2),
        "window": spent,
        "profile": profile_summary(spy),
    }


def _restart_summary(n: int, restarts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Signatures and writes summed over every restart (each must be 0); seconds to idle
    as the median of the restarts, with their spread."""
    idle = [r["idle_after_spawn_s"] for r in restarts]
    return {
        "certificates": n,
        "rounds": len(restarts),
        "kms_sign_calls": sum(r["kms_sign_calls"] for r in restarts),
        "kms_get_public_key_calls": [r["kms_get_public_key_calls"] for r in restarts],
        "secret_writes_metric": max(r["secret_writes_metric"] for r in restarts),
        "secrets_changed": sum(r["secrets_changed"] for r in restarts),
        "certificate_status_writes": sum(r["certificate_status_writes"] for r in restarts),
        "event_writes": sum(r["event_writes"] for r in restarts),
        "idle_after_spawn_s": round(statistics.median(idle), 2),
        "idle_after_spawn_spread_s": noise.spread(idle),
        "cpu_s": {
            process: noise.spread([r["window"]["cpu_s"].get(process, 0.0) for r in restarts])
            for process in ("operator", "kube-apiserver", "etcd")
        },
        "per_restart": list(restarts),
        "noise": noise.assess([r["window"] for r in restarts], idle, "restarts' seconds to idle"),
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

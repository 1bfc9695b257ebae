"""The PodCertificateRequest figures (issue 15): latency, throughput against a floor, and
the operator's memory with many Issued requests present.

Requests are made as a kubelet makes them, without a kubelet: a Node object, pods bound
to it that mount a ``podCertificate`` volume for the signer, and each request POSTed as
``system:node:<node>`` (`bench.kube.NodeSession`), so the Node authorizer and
NodeRestriction admission (on in `signet_dev.LocalControlPlane`) check every one against
the live pod, ServiceAccount and node. Signet answers for a namespaced Issuer with
``spec.podCertificates.enabled``; its signer is ``issuers.signet.dev/<namespace>.ca``.

As for Certificates (`bench.figures`), every timed figure is measured in several windows
and each window records the machine's state (`bench.noise`).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bench import noise
from bench.figures import (
    LATENCY_PAUSE_S,
    OPERATOR_API_CONNECTIONS,
    OPERATOR_SIGNS,
    OPERATOR_WORKERS,
    latency_round,
    latency_summary,
)
from bench.kube import (
    PCR_PLURAL,
    CertKey,
    NodePod,
    NodeSession,
    Obj,
    ObjectWatch,
    pcr_body,
    pcr_watch,
)
from bench.procs import GET_PUBLIC_KEY, ROOT, SIGN, child_env, py_spy
from bench.windows import Env, Sizes, profile_summary, wait_quiet, window
from signet.controller.informer import LIST_PAGE
from signet.decisions import podcertificate as pc

NODE = "bench-node"
PODS_PER_NAMESPACE = 10
"""Requests are spread over this many pods per namespace. The apiserver checks each
request against its pod wherever it comes from and Signet never reads pods, so a few
pods stand for many (a kubelet makes one request per pod and volume)."""
FLOOR_SIGNER = "bench.signet.dev/floor"
"""The floor's requests name a signer Signet does not answer, in namespaces it does not
watch."""
WARMUP = 50
"""Requests issued before the memory figure's in-process baseline is read."""


def _signer(namespace: str) -> str:
    return pc.signer_name("Issuer", namespace, "ca")


@contextmanager
def _watch(env: Env, namespaces: Sequence[str]) -> Iterator[ObjectWatch]:
    watch = pcr_watch(env.kube, namespaces).start()
    try:
        yield watch
    finally:
        watch.stop()


def _bodies(pods: Sequence[NodePod], prefix: str, n: int, signer: str) -> list[Obj]:
    """N requests spread over ``pods``, each with its own P-256 key (made before any
    clock starts: the kubelet makes its keys on the node)."""
    return [pcr_body(pods[i % len(pods)], f"{prefix}-{i:05d}", signer) for i in range(n)]


def _keys(bodies: Sequence[Obj]) -> list[CertKey]:
    return [(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bodies]


def _issuer_namespace(env: Env, namespace: str, key: str, node: tuple[str, str]) -> list[NodePod]:
    """A namespace whose Issuer (its own KMS key, so each window's signatures can be
    counted apart) answers pod certificates, and the pods that may ask it."""
    env.kube.ensure_namespace(namespace)
    env.kube.create_issuer(namespace, "ca", env.kms.versions[key], pod_certificates=True)
    return env.kube.create_node_pods(namespace, node, _signer(namespace), PODS_PER_NAMESPACE)


def podcert_phase(env: Env, sizes: Sizes) -> dict[str, Any]:
    """Latency and throughput in one operator life (each operator window with a namespace,
    Issuer and KMS key of its own, resolved before the first window), then the memory
    figure in an operator life of its own."""
    rounds = sizes.rounds
    node = env.kube.create_node(NODE)
    lat_ns = "bench-pcr-lat"
    op_ns = [f"bench-pcr-{i}" for i in range(rounds)]
    floor_ns = [f"bench-pcr-floor-{i}" for i in range(rounds)]
    pods = {lat_ns: _issuer_namespace(env, lat_ns, "pcr-lat", node)}
    for i, namespace in enumerate(op_ns):
        pods[namespace] = _issuer_namespace(env, namespace, f"pcr-{i}", node)
    for namespace in floor_ns:
        env.kube.ensure_namespace(namespace)
        pods[namespace] = env.kube.create_node_pods(
            namespace, node, FLOOR_SIGNER, PODS_PER_NAMESPACE
        )
    results: dict[str, Any] = {}
    started_wall = time.time()
    env.operator.start_for([lat_ns, *op_ns])
    for namespace in [lat_ns, *op_ns]:
        env.kube.wait_issuer_ready(namespace, "ca")
    wait_quiet(env)
    with _watch(env, [lat_ns, *op_ns, *floor_ns]) as watch:
        results["pcr_latency"] = _latency(env, watch, sizes, pods[lat_ns])
        results["pcr_throughput"] = _throughput(env, watch, sizes, op_ns, floor_ns, pods)
    env.operator.stop()
    stopped_wall = time.time()
    results["pcr_memory"] = _memory(env, sizes.pcr_memory, node)
    results["pcr_kms"] = {
        "sign_calls_per_request": {
            name: results[name].pop("_signs_per_request")
            for name in ("pcr_latency", "pcr_throughput", "pcr_memory")
        },
        "get_public_key_calls_per_issuer_per_process": {
            key: env.kms.count(GET_PUBLIC_KEY, key=key, since=started_wall, until=stopped_wall)
            for key in ["pcr-lat", *(f"pcr-{i}" for i in range(rounds))]
        },
    }
    return results


# -- latency ---------------------------------------------------------------------------


def _latency(env: Env, watch: ObjectWatch, sizes: Sizes, pods: list[NodePod]) -> dict[str, Any]:
    """``rounds`` rounds of requests made one at a time on an idle operator: from the
    create call returning to the watch event showing the Issued condition."""
    runs, namespace = sizes.pcr_latency_runs, pods[0].namespace
    per_round: list[dict[str, Any]] = []
    samples: list[float] = []
    since = time.time()
    for r in range(sizes.rounds):
        bodies = _bodies(pods, f"lat-{r}", runs, _signer(namespace))
        wait_quiet(env)
        name = f"pcr-latency-{r}"
        with window(env, name) as spent, py_spy(env.operator.pid, spy := env.spy(name)):
            round_samples = asyncio.run(_one_at_a_time(watch, bodies, pods[0].node))
        samples += round_samples
        per_round.append(latency_round(round_samples, spent, spy))
    signs = env.kms.count(SIGN, key="pcr-lat", since=since)
    result = latency_summary(runs, samples, per_round, signs)
    result["_signs_per_request"] = result.pop("_signs_per_certificate")
    return result


async def _one_at_a_time(watch: ObjectWatch, bodies: Sequence[Obj], node: str) -> list[float]:
    session = NodeSession(node, concurrency=1)
    samples = []
    try:
        for body, key in zip(bodies, _keys(bodies), strict=True):
            await session.create(body)
            created = time.perf_counter()
            issued = await asyncio.to_thread(watch.wait_all, [key], 30.0)
            samples.append(issued - created)
            await asyncio.sleep(LATENCY_PAUSE_S)
    finally:
        await session.close()
    return samples


# -- throughput against a floor ----------------------------------------------------------


def _throughput(
    env: Env,
    watch: ObjectWatch,
    sizes: Sizes,
    op_ns: Sequence[str],
    floor_ns: Sequence[str],
    pods: dict[str, list[NodePod]],
) -> dict[str, Any]:
    """Operator and floor windows alternate, ``rounds`` of each; each window's requests
    (and the operator's Events) are deleted before the next starts."""
    n, rounds = sizes.pcr_throughput, sizes.rounds
    operator: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    signs = 0
    for i in range(rounds):
        since = time.time()
        operator.append(_operator_window(env, watch, n, pods[op_ns[i]], f"pcr-operator-{i}"))
        signs += env.kms.count(SIGN, key=f"pcr-{i}", since=since, until=time.time())
        wait_quiet(env)  # the operator's Events are posted before they are deleted
        env.kube.delete_window_objects(op_ns[i])
        floor.append(_floor_window(env, watch, n, pods[floor_ns[i]], f"pcr-floor-{i}"))
        env.kube.delete_window_objects(floor_ns[i])
    operator_s = [w["seconds"] for w in operator]
    floor_s = [w["seconds"] for w in floor]
    median_operator = statistics.median(operator_s)
    median_floor = statistics.median(floor_s)
    windows = [w["window"] for pair in zip(operator, floor, strict=True) for w in pair]
    return {
        "requests": n,
        "rounds": rounds,
        "order": [w["name"] for w in windows],
        "operator_s": round(median_operator, 2),
        "floor_s": round(median_floor, 2),
        "ratio": round(median_operator / median_floor, 2),
        "operator_per_s": round(n / median_operator, 1),
        "floor_per_s": round(n / median_floor, 1),
        "operator_windows_s": noise.spread(operator_s),
        "floor_windows_s": noise.spread(floor_s),
        "pair_ratios": noise.spread([o / f for o, f in zip(operator_s, floor_s, strict=True)]),
        "operator_windows": operator,
        "floor_windows": floor,
        "between_windows": "each window in a namespace of its own; its requests and Events "
        "deleted before the next",
        "concurrency": {
            "creates": 32,
            "workers": OPERATOR_WORKERS,
            "signs": OPERATOR_SIGNS,
            "api_connections": OPERATOR_API_CONNECTIONS,
        },
        "noise": noise.assess(windows, floor_s, "floor windows (s)"),
        "_signs_per_request": round(signs / (n * rounds), 3),
    }


def _operator_window(
    env: Env, watch: ObjectWatch, n: int, pods: list[NodePod], name: str
) -> dict[str, Any]:
    """N requests created at once as the node; seconds from the first create to the last
    one seen Issued."""
    bodies = _bodies(pods, name, n, _signer(pods[0].namespace))
    keys = _keys(bodies)
    wait_quiet(env)
    with window(env, name, n / 150) as spent, py_spy(env.operator.pid, spy := env.spy(name)):
        t0 = time.perf_counter()
        created = asyncio.run(_create_all(bodies, pods[0].node))
        seconds = watch.wait_all(keys, timeout=120 + n * 0.5) - t0
    return {
        "name": name,
        "seconds": round(seconds, 3),
        "created_s": round(max(created) - t0, 3),
        "max_unanswered": _max_unanswered(created, [watch.ready_at[k] for k in keys]),
        "window": spent,
        "profile": profile_summary(spy),
    }


async def _create_all(
    bodies: Sequence[Obj], node: str, then: Callable[[Obj], None] | None = None
) -> list[float]:
    """Create every request at once as the node; when each POST returned (perf_counter).
    ``then`` is given each created request as its POST returns."""
    session = NodeSession(node)
    created: list[float] = []

    def note(body: Obj) -> None:
        created.append(time.perf_counter())
        if then is not None:
            then(body)

    try:
        await session.create_all(bodies, created=note)
    finally:
        await session.close()
    return created


def _max_unanswered(created: Sequence[float], issued: Sequence[float]) -> int:
    """The most requests created and not yet seen Issued at any moment of a burst: what
    the operator had to hold or queue at once."""
    steps = sorted([(t, 1) for t in created] + [(t, -1) for t in issued])
    most = waiting = 0
    for _, step in steps:
        waiting += step
        most = max(most, waiting)
    return most


def _floor_window(
    env: Env, watch: ObjectWatch, n: int, pods: list[NodePod], name: str
) -> dict[str, Any]:
    """The same end state by the shortest path: the same creates at once (as the node, 32
    at a time) and `bench.pcr_floor`, a process of its own, answering each request as its
    POST returns (the harness hands it over on a pipe). Timed from the first create to the
    last request seen Issued by the watch; the script starts (imports, KMS client, its CA's
    one signature) before the clock."""
    bodies = _bodies(pods, name, n, FLOOR_SIGNER)
    log = env.workdir / f"{name}.log"
    with log.open("w") as errors:
        script = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.pcr_floor",
                env.kms.address,
                env.kms.versions["pcr-floor"],
                f"--workers={OPERATOR_WORKERS}",
                f"--signs={OPERATOR_SIGNS}",
                f"--connections={OPERATOR_API_CONNECTIONS}",
            ],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert script.stdin is not None and script.stdout is not None
    try:
        if script.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the floor script did not start:\n{log.read_text()[-3000:]}")
        wait_quiet(env)
        stdin = script.stdin

        def hand_over(created: Obj) -> None:
            stdin.write(json.dumps(created) + "\n")
            stdin.flush()

        with window(env, name, n / 250, extra={"floor_script": script.pid}) as spent:
            t0 = time.perf_counter()
            asyncio.run(_create_all(bodies, pods[0].node, hand_over))
            stdin.close()
            try:
                seconds = watch.wait_all(_keys(bodies), timeout=60 + n * 0.1) - t0
            except TimeoutError as error:
                raise TimeoutError(f"{error}; floor script:\n{log.read_text()[-3000:]}") from None
        script.wait(30)  # not inside the window: its CPU is read from /proc until reaped
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    return {"name": name, "seconds": round(seconds, 3), "window": spent}


# -- memory ------------------------------------------------------------------------------


def _memory(env: Env, n: int, node: tuple[str, str]) -> dict[str, Any]:
    """Operator RSS with N Issued requests present, per request, over two baselines:

    * after a restart over them (a fresh process that lists and drops them; it must sign
      and write nothing), over the same operator freshly started over the namespace and
      Issuer before any request existed: what holding them costs in steady state;
    * right after issuing them at once, in the same process, over its reading after a
      warm-up batch of ``WARMUP`` requests: the first requests pay for what is made once
      (worker threads, lazily imported modules, connection pools), not per request.
    """
    namespace = "bench-pcr-mem"
    pods = _issuer_namespace(env, namespace, "pcr-mem", node)
    warmup = _bodies(pods, "warm", min(WARMUP, n), _signer(namespace))
    bodies = _bodies(pods, "mem", n, _signer(namespace))
    env.operator.start_for([namespace])
    env.kube.wait_issuer_ready(namespace, "ca")
    wait_quiet(env)
    fresh = env.operator.memory()
    since = time.time()
    with _watch(env, [namespace]) as watch:
        asyncio.run(_create_all(warmup, node[0]))
        watch.wait_all(_keys(warmup), timeout=120)
        wait_quiet(env)
        warmed = env.operator.memory()
        t0 = time.perf_counter()
        created = asyncio.run(_create_all(bodies, node[0]))
        issued_s = watch.wait_all(_keys(bodies), timeout=180 + n * 0.25) - t0
        issued = [watch.ready_at[k] for k in _keys(bodies)]
    signs = env.kms.count(SIGN, key="pcr-mem", since=since)
    wait_quiet(env)
    after_issuance = env.operator.memory()
    env.operator.dump_allocations()  # with --tracemalloc or --mallocstats
    present = n + len(warmup)
    restart = _restart(env, namespace, present)
    after_restart = env.operator.memory()
    env.operator.dump_allocations()
    env.operator.stop()

    def per_request_kib(reading: dict[str, Any], base: dict[str, Any], count: int) -> float:
        delta_mib = float(reading["rss_mib"]) - float(base["rss_mib"])
        return round(delta_mib * 1024 / count, 2)

    return {
        "requests": n,
        "warmup_requests": len(warmup),
        "created_and_issued_s": round(issued_s, 1),
        "created_s": round(max(created) - t0, 1),
        "issued_per_s": round(n / issued_s, 1),
        "max_unanswered": _max_unanswered(created, issued),
        "fresh_baseline": fresh,
        "warmed_baseline": warmed,
        "after_issuance": after_issuance,
        "after_restart": after_restart,
        "kib_per_request_after_issuance": per_request_kib(after_issuance, warmed, n),
        "kib_per_request_after_restart": per_request_kib(after_restart, fresh, present),
        "resolution_kib_per_request": round(0.1 * 1024 / n, 2),
        "restart": restart,
        "_signs_per_request": round(signs / present, 3),
    }


def _restart(env: Env, namespace: str, n: int, timeout: float = 300) -> dict[str, Any]:
    """Restart over the Issued requests and wait until the operator has listed them all
    (kopf lists in pages of ``LIST_PAGE``: that many LIST requests reach the apiserver)
    and gone quiet; what it signed and wrote meanwhile."""
    before = env.kube.pcr_versions(namespace)
    lists = f"LIST {PCR_PLURAL}"
    listed_before = env.kube.apiserver_requests().get(lists, 0.0)
    env.operator.stop()
    since = time.time()
    spawned = env.operator.start_for([namespace])
    pages = max(1, math.floor(n / LIST_PAGE))
    deadline = time.monotonic() + timeout
    while env.kube.apiserver_requests().get(lists, 0.0) - listed_before < pages:
        if time.monotonic() > deadline:
            raise TimeoutError("the restarted operator did not list the requests")
        time.sleep(0.2)
    listed_s = time.perf_counter() - spawned
    wait_quiet(env)
    after = env.kube.pcr_versions(namespace)
    return {
        "listed_after_spawn_s": round(listed_s, 2),
        "quiet_after_spawn_s": round(time.perf_counter() - spawned, 2),
        "kms_sign_calls": env.kms.count(SIGN, key="pcr-mem", since=since, code=None),
        "status_writes": sum(1 for k, v in after.items() if before.get(k) != v),
    }

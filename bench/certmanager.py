"""Side by side with the real cert-manager controller (issue 17): N Certificates issued by
cert-manager's CA issuer and N by Signet, on the same apiserver in the same run.

The cert-manager side is cert-manager's own controllers (`signet_dev.certmanager`, built
by `make tools`) with a CA Issuer whose key pair is a Secret: cert-manager's fastest
in-cluster issuer, signing locally. Signet's side is its own Certificate with a KMS-backed
Issuer (the emulator's round trip included), as figure 1 measures it. Windows alternate
(cert-manager, Signet, cert-manager, ...), each in a namespace of its own and each started
quiet, and both controllers run throughout, so each side's idle cost while the other works
is recorded too. A window is timed from the first create to the last Certificate seen
Ready by a watch; it records the apiserver writes it caused (the harness's creates taken
out), each process's CPU seconds and, while its Certificates are all Ready, the
controller's RSS. Then one window per side at the large size (one pair: the memory and
scaling figure, not judged for noise).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench import noise
from bench.figures import _clear_operator_window, _operator_window
from bench.kube import CertificateWatch, Kube, Obj, ObjectWatch
from bench.procs import cpu_seconds, proc_memory
from bench.windows import OPERATOR_IDLE_CPU, WRITES, Env, Sizes, wait_quiet, window
from signet.controller.kubeapi import KubeApi
from signet_dev import certmanager

CM_GROUP, CM_VERSION = "cert-manager.io", "v1"
CA_SECRET = "bench-ca-key-pair"  # noqa: S105 (a Secret's name)


@dataclass
class CertManagerEnv(Env):
    """The run's `Env` with cert-manager's controller among the accounted processes: in a
    Signet window it idles, and what it costs to be there is recorded too."""

    controller: certmanager.CertManagerController | None = None

    def pids(self) -> dict[str, int]:
        pids = super().pids()
        if self.controller is not None and self.controller.process is not None:
            pids["cert_manager"] = self.controller.pid
        return pids


def certmanager_phase(base: Env, sizes: Sizes) -> dict[str, Any]:
    """The side-by-side figure; cert-manager's CRDs and controller exist only during it."""
    rounds, large = sizes.rounds, sizes.certmanager_large
    cm_ns = [f"bench-cm-{i}" for i in range(rounds)] + (["bench-cm-large"] if large else [])
    signet_ns = [f"bench-cmsig-{i}" for i in range(rounds)] + (
        ["bench-cmsig-large"] if large else []
    )
    keys = [f"certmanager-{i}" for i in range(rounds)] + (["certmanager-large"] if large else [])
    certmanager.install_crds(base.kube)
    controller = certmanager.CertManagerController(
        base.kube.kubeconfig, base.workdir / "cert-manager", start_timeout=120
    )
    env = CertManagerEnv(
        **{f.name: getattr(base, f.name) for f in fields(Env)}, controller=controller
    )
    try:
        for namespace in cm_ns:
            env.kube.ensure_namespace(namespace)
            _ca_issuer(env.kube, namespace)
        for namespace, key in zip(signet_ns, keys, strict=True):
            env.kube.ensure_namespace(namespace)
            env.kube.create_issuer(namespace, "ca", env.kms.versions[key])
        controller.start()
        env.operator.start_for(signet_ns)
        for namespace in signet_ns:
            env.kube.wait_issuer_ready(namespace, "ca")
        for namespace in cm_ns:
            _wait_cm_issuer(env.kube, namespace)
        return {"certmanager": _figure(env, controller, sizes, cm_ns, signet_ns)}
    finally:
        env.operator.stop()
        controller.stop()
        certmanager.remove_crds(env.kube)


def _figure(
    env: Env,
    controller: certmanager.CertManagerController,
    sizes: Sizes,
    cm_ns: Sequence[str],
    signet_ns: Sequence[str],
) -> dict[str, Any]:
    rounds, n, large = sizes.rounds, sizes.certmanager, sizes.certmanager_large
    cm_windows: list[dict[str, Any]] = []
    signet_windows: list[dict[str, Any]] = []
    large_pair: dict[str, Any] = {}
    cm_watch = _cm_watch(env.kube, cm_ns)
    signet_watch = CertificateWatch(env.kube, signet_ns).start()
    try:
        for i in range(rounds):
            cm_windows.append(_cm_window(env, controller, cm_watch, n, cm_ns[i], f"cm-{i}"))
            _clear_cm_window(env, controller, cm_ns[i])
            signet_windows.append(
                _signet_window(env, controller, signet_watch, n, signet_ns[i], f"signet-{i}")
            )
            _clear_operator_window(env, signet_ns[i])
        if large:
            large_pair["cert_manager"] = _cm_window(
                env, controller, cm_watch, large, cm_ns[-1], "cm-large"
            )
            large_pair["signet"] = _signet_window(
                env, controller, signet_watch, large, signet_ns[-1], "signet-large"
            )
    finally:
        cm_watch.stop()
        signet_watch.stop()
    cm_s = [w["seconds"] for w in cm_windows]
    signet_s = [w["seconds"] for w in signet_windows]
    windows = [w["window"] for pair in zip(cm_windows, signet_windows, strict=True) for w in pair]
    result: dict[str, Any] = {
        "certificates": n,
        "rounds": rounds,
        "order": [w["name"] for pair in zip(cm_windows, signet_windows, strict=True) for w in pair],
        "cert_manager": _side(cm_windows, n),
        "signet": _side(signet_windows, n),
        "speedup": round(statistics.median(cm_s) / statistics.median(signet_s), 2),
        "pair_speedups": noise.spread([c / s for c, s in zip(cm_s, signet_s, strict=True)]),
        "cert_manager_windows": cm_windows,
        "signet_windows": signet_windows,
        "noise": noise.assess(windows, cm_s, "cert-manager windows (s)"),
        "setup": "cert-manager: its CA Issuer (key pair in a Secret, signs in process), "
        "Certificates ECDSA P-256 24h; Signet: a self-signed Issuer on an emulated KMS key, "
        "the same Certificate shape; both controllers running throughout, each side in "
        "namespaces of its own",
    }
    if large_pair:
        cm, signet = large_pair["cert_manager"], large_pair["signet"]
        result["large"] = {
            "certificates": large,
            "cert_manager": _side([cm], large),
            "signet": _side([signet], large),
            "speedup": round(cm["seconds"] / signet["seconds"], 2),
            "rss_share": round(signet["rss_mib"] / cm["rss_mib"], 3),
            "windows": [cm, signet],
        }
    result["writes_ratio"] = round(
        result["cert_manager"]["writes_per_certificate"]
        / result["signet"]["writes_per_certificate"],
        2,
    )
    return result


def _side(windows: Sequence[dict[str, Any]], n: int) -> dict[str, Any]:
    """One side's medians over its windows."""
    seconds = [w["seconds"] for w in windows]
    return {
        "seconds": round(statistics.median(seconds), 2),
        "windows_s": noise.spread(seconds),
        "per_s": round(n / statistics.median(seconds), 1),
        "writes_per_certificate": round(statistics.median(w["writes"] for w in windows) / n, 2),
        "controller_cpu_s": round(statistics.median(w["controller_cpu_s"] for w in windows), 2),
        "rss_mib": round(statistics.median(w["rss_mib"] for w in windows), 1),
        "hwm_mib": max(w["hwm_mib"] for w in windows),
    }


# -- windows -------------------------------------------------------------------------------


def _quiet(env: Env, controller: certmanager.CertManagerController, timeout: float = 300) -> None:
    """No apiserver writes and Signet idle for a second (`wait_quiet`), and cert-manager
    idle too."""
    deadline = time.monotonic() + timeout
    while True:
        wait_quiet(env, timeout=timeout)
        before = cpu_seconds(controller.pid)
        time.sleep(1.0)
        if cpu_seconds(controller.pid) - before <= OPERATOR_IDLE_CPU:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("cert-manager kept working")


def _writes(requests: dict[str, int], created: int) -> int:
    """Write requests the apiserver served in a window, less the harness's creates."""
    total = sum(v for k, v in requests.items() if k.split(" ")[0].upper() in WRITES)
    return total - created


def _cm_window(
    env: Env,
    controller: certmanager.CertManagerController,
    watch: ObjectWatch,
    n: int,
    namespace: str,
    name: str,
) -> dict[str, Any]:
    names = [f"cm-{i:05d}" for i in range(n)]
    bodies = [_cm_certificate(namespace, cert) for cert in names]
    _quiet(env, controller)
    baseline = _Baseline(env, controller.pid)
    with window(env, name) as spent:
        t0 = time.perf_counter()
        create_s = _create_at_once(env.kube, bodies, "cert-manager.io/v1", "certificates")
        seconds = watch.wait_all([(namespace, c) for c in names], timeout=300 + n * 0.5) - t0
    memory = proc_memory(controller.pid)
    _quiet(env, controller)
    settled = baseline.settled(env, n)
    return _record(name, seconds, create_s, spent, n, "cert_manager", memory, settled)


def _signet_window(
    env: Env,
    controller: certmanager.CertManagerController,
    watch: CertificateWatch,
    n: int,
    namespace: str,
    name: str,
) -> dict[str, Any]:
    _quiet(env, controller)
    baseline = _Baseline(env, env.operator.pid)
    timed = _operator_window(env, watch, n, namespace, name)
    memory = env.operator.memory()
    _quiet(env, controller)
    settled = baseline.settled(env, n)
    spent = timed["window"]
    return _record(name, timed["seconds"], timed["create_s"], spent, n, "operator", memory, settled)


class _Baseline:
    """The apiserver's request counts and a controller's CPU before a window, to count
    what the window's Certificates cost until everything settled: the Events and status
    writes that trail the last Ready are part of issuing them."""

    def __init__(self, env: Env, pid: int) -> None:
        self._requests = env.kube.apiserver_requests()
        self._pid = pid
        self._cpu = cpu_seconds(pid)

    def settled(self, env: Env, n: int) -> dict[str, Any]:
        after = env.kube.apiserver_requests()
        delta = {k: int(v - self._requests.get(k, 0.0)) for k, v in after.items()}
        writes = _writes(delta, n)
        return {
            "writes": writes,
            "writes_per_certificate": round(writes / n, 2),
            "controller_cpu_s": round(cpu_seconds(self._pid) - self._cpu, 2),
            "write_requests": {
                k: v for k, v in delta.items() if v and k.split(" ")[0].upper() in WRITES
            },
        }


def _record(
    name: str,
    seconds: float,
    create_s: float,
    spent: dict[str, Any],
    n: int,
    process: str,
    memory: dict[str, Any],
    settled: dict[str, Any],
) -> dict[str, Any]:
    """One window: the timed part (to the last Ready) and, for writes and CPU, until the
    controller went quiet after it (``settled``; the harness's creates taken out)."""
    return {
        "name": name,
        "seconds": round(seconds, 3),
        "create_s": round(create_s, 2),
        "writes": settled["writes"],
        "writes_per_certificate": settled["writes_per_certificate"],
        "writes_in_window": _writes(spent["requests"], n),
        "controller_cpu_s": settled["controller_cpu_s"],
        "controller_cpu_in_window_s": spent["cpu_s"].get(process, 0.0),
        "rss_mib": memory["rss_mib"],
        "hwm_mib": memory["hwm_mib"],
        "write_requests": settled["write_requests"],
        "window": spent,
    }


def _clear_cm_window(
    env: Env, controller: certmanager.CertManagerController, namespace: str
) -> None:
    """Delete a cert-manager window's Certificates, requests, Secrets (all but the CA's:
    no garbage collector runs in the bench's control plane) and Events."""
    _quiet(env, controller)
    custom, core = env.kube.custom, env.kube.core
    for plural in ("certificates", "certificaterequests"):
        custom.delete_collection_namespaced_custom_object(
            CM_GROUP, CM_VERSION, namespace, plural, _preload_content=False
        )
    core.delete_collection_namespaced_secret(
        namespace, field_selector=f"metadata.name!={CA_SECRET}", _preload_content=False
    )
    core.delete_collection_namespaced_event(namespace, _preload_content=False)


# -- objects -------------------------------------------------------------------------------


def _cm_certificate(namespace: str, name: str) -> Obj:
    """The shape of `bench.kube.certificate_body`, as a cert-manager Certificate."""
    return {
        "apiVersion": f"{CM_GROUP}/{CM_VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "issuerRef": {"name": "ca", "kind": "Issuer"},
            "secretName": f"{name}-tls",
            "duration": "24h",
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "dnsNames": [f"{name}.{namespace}.svc"],
        },
    }


def _cm_ready(obj: Obj) -> bool:
    """Ready=True for the current generation, with the revision recorded (the readiness
    controller may call a valid Secret Ready before the issuing controller records it)."""
    status = obj.get("status") or {}
    return "revision" in status and any(
        c.get("type") == "Ready"
        and c.get("status") == "True"
        and c.get("observedGeneration") == obj["metadata"].get("generation")
        for c in status.get("conditions") or []
    )


def _cm_watch(kube: Kube, namespaces: Sequence[str]) -> ObjectWatch:
    return ObjectWatch(
        kube, namespaces, group=CM_GROUP, version=CM_VERSION, plural="certificates",
        ready=_cm_ready,
    ).start()  # fmt: skip


def _create_at_once(kube: Kube, bodies: Sequence[Obj], api: str, plural: str) -> float:
    """POST the objects 32 at a time over one aiohttp session, as figure 1's creates."""

    async def run() -> None:
        client = KubeApi(connections=32)
        slots = asyncio.Semaphore(32)

        async def create(body: Obj) -> None:
            path = f"/apis/{api}/namespaces/{body['metadata']['namespace']}/{plural}"
            async with slots:
                await client.request("POST", path, body)

        try:
            await asyncio.gather(*(create(body) for body in bodies))
        finally:
            await client.close()

    start = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - start


def _ca_issuer(kube: Kube, namespace: str) -> None:
    """cert-manager's CA Issuer ``ca`` over a P-256 CA key pair in a Secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench {namespace} CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = {
        "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": CA_SECRET},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v).decode() for k, v in pem.items()},
        },
        _preload_content=False,
    )
    issuer = {
        "apiVersion": f"{CM_GROUP}/{CM_VERSION}",
        "kind": "Issuer",
        "metadata": {"name": "ca", "namespace": namespace},
        "spec": {"ca": {"secretName": CA_SECRET}},
    }
    kube.custom.create_namespaced_custom_object(
        CM_GROUP, CM_VERSION, namespace, "issuers", issuer, _preload_content=False
    )


def _wait_cm_issuer(kube: Kube, namespace: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = kube.custom.get_namespaced_custom_object(
            CM_GROUP, CM_VERSION, namespace, "issuers", "ca"
        )
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"cert-manager Issuer {namespace}/ca not Ready after {timeout}s")


def certmanager_rows(figures: dict[str, Any], add: Callable[..., None]) -> None:
    """The figure's rows of the run's table: (figure, measure, value, target, met)."""
    if not (c := figures.get("certmanager")):
        return

    def pair(field: str, of: dict[str, Any]) -> str:
        return f"{of['cert_manager'][field]}/{of['signet'][field]}"

    n = c["certificates"]
    add("cert-mgr", f"s for {n}, cert-manager/Signet", pair("seconds", c), "", None)
    add("cert-mgr", f"speedup at {n}", c["speedup"], ">= 8", c["speedup"] >= 8)
    add("cert-mgr", "writes/cert, cert-manager/Signet", pair("writes_per_certificate", c), "", None)
    add(
        "cert-mgr",
        "fewer writes per cert (ratio)",
        c["writes_ratio"],
        ">= 8",
        c["writes_ratio"] >= 8,
    )
    add("cert-mgr", "controller CPU s, cm/Signet", pair("controller_cpu_s", c), "", None)
    add("cert-mgr", f"RSS MiB at {n}, cm/Signet", pair("rss_mib", c), "", None)
    if large := c.get("large"):
        n = large["certificates"]
        add("cert-mgr", f"s for {n}, cert-manager/Signet", pair("seconds", large), "", None)
        add("cert-mgr", f"speedup at {n}", large["speedup"], ">= 20", large["speedup"] >= 20)
        add("cert-mgr", f"RSS MiB at {n}, cm/Signet", pair("rss_mib", large), "", None)
        share = large["rss_share"]
        add("cert-mgr", f"Signet RSS / cert-manager's at {n}", share, "<= 0.2", share <= 0.2)


__all__ = ["certmanager_phase", "certmanager_rows"]

"""The CA rotation figure: a rollover of every Certificate of one issuer under a
process-wide ``--sign-qps``, timed from the key change to Stable.

What it reports: total time and time per phase, KMS signatures (one per leaf plus the new
CA's bootstrap) and the busiest second of them against the limit, the apiserver's request
rate, and how many leaves of the new key were written before their namespace's bundle held
the new anchor (the ordering the node test turns into zero failed handshakes; target 0).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import kubernetes

from bench.figures import _ApiSampler, _max_in_window, _setup_namespace, _watch
from bench.kube import certificate_body
from bench.procs import SIGN
from bench.windows import Env, Sizes
from signet.api import GROUP, VERSION
from signet.secretformat import layout

NAMESPACE = "bench-rotation"
PROPAGATION = "5s"
GRACE = "5s"
REISSUE_QPS = 1000
"""Above --sign-qps on purpose: the process-wide limit is what this figure exercises."""


class _Ordering:
    """ConfigMap and Secret writes of the namespace in etcd's order (resourceVersion)."""

    def __init__(self, kube: kubernetes.client.CoreV1Api) -> None:
        self._core = kube
        self.seen: list[tuple[int, str, int, str | None]] = []
        """(revision, kind, CA certificates in ca.crt, key version annotation)."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for lister, kind in (
            (self._core.list_namespaced_config_map, "ConfigMap"),
            (self._core.list_namespaced_secret, "Secret"),
        ):
            listed = lister(NAMESPACE, limit=1)
            assert listed.metadata is not None
            since = listed.metadata.resource_version
            thread = threading.Thread(target=self._run, args=(lister, kind, since), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, lister: Any, kind: str, since: str) -> None:
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        while not self._stop.is_set():
            for event in watch.stream(  # type: ignore[no-untyped-call]
                lister, NAMESPACE, label_selector=layout.SELECTOR, resource_version=since,
                timeout_seconds=2,
            ):  # fmt: skip
                obj = event["object"]
                since = obj.metadata.resource_version
                anchors = (obj.data or {}).get("ca.crt", "").count("BEGIN CERTIFICATE")
                version = (obj.metadata.annotations or {}).get(layout.KEY_VERSION)
                self.seen.append((int(since), kind, anchors, version))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def leaves_before_anchor(self, new_key: str) -> int:
        published = min(
            (rev for rev, kind, anchors, _ in self.seen if kind == "ConfigMap" and anchors == 2),
            default=None,
        )
        return sum(
            1
            for rev, kind, _, version in self.seen
            if kind == "Secret" and version == new_key and (published is None or rev < published)
        )


def _issuer(env: Env) -> dict[str, Any]:
    obj: dict[str, Any] = env.kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "issuers", "ca"
    )
    return obj


def rotation_phase(env: Env, sizes: Sizes) -> dict[str, Any]:
    n, qps = sizes.rotation, sizes.rotation_qps
    old, new = env.kms.versions["rotation-old"], env.kms.versions["rotation-new"]
    _setup_namespace(env, NAMESPACE, "rotation-old")
    env.kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "issuers", "ca",
        {"spec": {"rotation": {"trustPropagation": PROPAGATION, "reissueQPS": REISSUE_QPS,
                               "retirementGrace": GRACE}}},
    )  # fmt: skip
    names = [f"rot-{i:05d}" for i in range(n)]
    keys = [(NAMESPACE, name) for name in names]
    with _watch(env, [NAMESPACE]) as watch:
        env.operator.start_for([NAMESPACE])  # first issuance unlimited: it is not the figure
        env.kube.wait_issuer_ready(NAMESPACE, "ca")
        env.kube.parallel(
            lambda name: env.kube.create_certificate(certificate_body(NAMESPACE, name)), names
        )
        if not watch.wait(lambda: watch.count_ready(keys) == n, timeout=120 + n * 0.5):
            raise TimeoutError("rotation Certificates not all issued")
    env.operator.stop()
    env.operator.start_for([NAMESPACE], [f"--sign-qps={qps:g}"])
    env.kube.wait_issuer_ready(NAMESPACE, "ca")
    ordering = _Ordering(env.kube.core)
    ordering.start()
    sampler = _ApiSampler(env.kube)
    sampler.start()
    since, started = time.time(), time.perf_counter()
    env.kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "issuers", "ca",
        {"spec": {"kms": {"cloudKMS": {"keyVersion": new}}}},
    )  # fmt: skip
    phases: dict[str, float] = {}
    deadline = started + 120 + n / qps * 3
    while time.perf_counter() < deadline:
        status = _issuer(env).get("status") or {}
        phase = (status.get("rotation") or {}).get("phase", "Stable")
        phases.setdefault(phase, round(time.perf_counter() - started, 1))
        if phase == "Stable" and status.get("keyVersion") == new:
            break
        time.sleep(0.2)
    total = time.perf_counter() - started
    sampler.stop()
    ordering.stop()
    env.operator.stop()
    secrets = env.kube.core.list_namespaced_secret(NAMESPACE, label_selector=layout.SELECTOR)
    on_new = sum(
        1 for s in secrets.items if (s.metadata.annotations or {}).get(layout.KEY_VERSION) == new
    )
    signs = sorted(env.kms.times(SIGN, key="rotation-new", since=since))
    return {
        "rotation": {
            "certificates": n,
            "sign_qps_limit": qps,
            "trust_propagation": PROPAGATION,
            "retirement_grace": GRACE,
            "completed": phases.get("Stable") is not None and on_new == n,
            "total_s": round(total, 1),
            "phase_reached_at_s": phases,
            "reissue_s": round(phases.get("Retiring", total) - phases.get("Reissuing", 0.0), 1),
            "leaves_on_new_key": on_new,
            "kms_signs_new_key": len(signs),
            "kms_signs_per_leaf": round((len(signs) - 1) / n, 3) if n else None,
            "kms_max_signs_in_any_1s": _max_in_window(signs, 1.0),
            "leaves_written_before_their_anchor": ordering.leaves_before_anchor(new),
            "old_key": hashlib.sha256(old.encode()).hexdigest()[:8],
            "apiserver": sampler.summary(),
        }
    }

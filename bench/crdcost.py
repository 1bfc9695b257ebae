"""What the apiserver pays to admit a Certificate (issue 19): Signet's CRD against
cert-manager's, with no controller running.

A create of a custom object costs the apiserver its schema: decoding and pruning,
defaulting, OpenAPI validation (patterns, enums, bounds), the CEL rules, managedFields
and the etcd write. Signet's Certificate carries more CEL rules than cert-manager's, so
the same-shaped object could cost more to admit; this figure measures how much, apart
from everything a controller would add. Both CRDs are applied to the bench's control
plane; windows of N creates alternate (cert-manager, Signet, cert-manager, ...), each
started with a quiet apiserver, each in a namespace of its own, and each records the
apiserver's (and etcd's) CPU seconds. The headline is the ratio of the two sides' median
apiserver CPU. ``--profile`` adds a Go CPU profile of the apiserver over each window.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench import noise
from bench.certmanager import CM_GROUP, CM_VERSION, _cm_certificate, _create_at_once
from bench.kube import Obj, certificate_body
from bench.windows import Env, Sizes, wait_quiet, window
from signet.api import GROUP, VERSION
from signet_dev import certmanager

APISERVER = "kube-apiserver"
EXPECT_S_PER_CREATE = 0.004
"""Rough wall seconds per create on two cores: how long a ``--profile`` profile runs."""


def crdcost_phase(env: Env, sizes: Sizes) -> dict[str, Any]:
    """The figure; cert-manager's CRDs exist only during it (Signet's are the run's)."""
    rounds, n = sizes.rounds, sizes.crdcost
    sides: dict[str, tuple[str, str, Callable[[str, str], Obj]]] = {
        "cert_manager": (CM_GROUP, CM_VERSION, _cm_certificate),
        "signet": (GROUP, VERSION, certificate_body),
    }
    certmanager.install_crds(env.kube)
    try:
        for side in sides:
            for i in range(rounds):
                env.kube.ensure_namespace(_namespace(side, i))
        # The first create of a kind builds its validators (CEL programs included): not
        # part of what every later create pays.
        for side, (group, version, body) in sides.items():
            warm = _namespace(side, 0)
            _create_at_once(env.kube, [body(warm, "warm-up")], f"{group}/{version}", "certificates")
            _clear(env, group, version, warm)
        windows: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for i in range(rounds):
            for side, (group, version, body) in sides.items():
                namespace = _namespace(side, i)
                bodies = [body(namespace, f"c-{j}") for j in range(n)]
                wait_quiet(env)
                with window(env, f"crdcost-{side}-{i}", expect_s=n * EXPECT_S_PER_CREATE) as spent:
                    _create_at_once(env.kube, bodies, f"{group}/{version}", "certificates")
                windows[side].append(spent)
                _clear(env, group, version, namespace)
    finally:
        teardown = _remove_crds(env)
    cm = [w["cpu_s"][APISERVER] for w in windows["cert_manager"]]
    signet = [w["cpu_s"][APISERVER] for w in windows["signet"]]
    ordered = [
        w for pair in zip(windows["cert_manager"], windows["signet"], strict=True) for w in pair
    ]
    return {
        "crdcost": {
            "certificates": n,
            "rounds": rounds,
            "order": [w["name"] for w in ordered],
            "cert_manager": _side(windows["cert_manager"]),
            "signet": _side(windows["signet"]),
            "ratio": round(statistics.median(signet) / statistics.median(cm), 2),
            "pair_ratios": noise.spread([s / c for s, c in zip(signet, cm, strict=True)]),
            "windows": ordered,
            "noise": noise.assess(ordered, cm, "cert-manager windows' apiserver CPU (s)"),
            "setup": "no controller running; Signet: spec.issuerRef, secretName, duration "
            "24h, privateKey ECDSA 256, x509.dnsNames (one name), the rest defaulted; "
            "cert-manager: the same fields; POSTed 32 at a time over one session",
            "teardown": teardown or "ok",
        }
    }


def _remove_crds(env: Env) -> str:
    """Remove cert-manager's CRDs; a removal that fails is reported with the figure, not
    allowed to lose the windows measured before it."""
    try:
        certmanager.remove_crds(env.kube)
    except Exception as error:  # any failure here is reported with the figure
        print(f"  crdcost: removing cert-manager's CRDs failed: {error}")
        return str(error)
    return ""


def _side(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's apiserver and etcd CPU and wall seconds over its windows."""
    return {
        "apiserver_cpu_s": noise.spread([w["cpu_s"][APISERVER] for w in windows]),
        "etcd_cpu_s": noise.spread([w["cpu_s"]["etcd"] for w in windows]),
        "seconds": noise.spread([w["seconds"] for w in windows]),
    }


def _namespace(side: str, i: int) -> str:
    return f"bench-crdcost-{side.replace('_', '')}-{i}"


def _clear(env: Env, group: str, version: str, namespace: str) -> None:
    """Delete a window's Certificates (no controller holds finalizers on them)."""
    env.kube.custom.delete_collection_namespaced_custom_object(
        group, version, namespace, "certificates", _preload_content=False
    )


def crdcost_rows(figures: dict[str, Any], add: Callable[..., None]) -> None:
    """The figure's rows in the run's table."""
    if not (c := figures.get("crdcost")):
        return
    n, rounds = c["certificates"], c["rounds"]
    for side, label in (("signet", "Signet"), ("cert_manager", "cert-manager")):
        cpu = c[side]["apiserver_cpu_s"]
        add(
            "crdcost",
            f"apiserver CPU s, {n} {label} creates (median of {rounds})",
            cpu["median"],
            "",
            None,
        )
        add("crdcost", "  windows", f"{cpu['min']:g}-{cpu['max']:g}", "", None)
    add("crdcost", "ratio of medians Signet/cert-manager", c["ratio"], "", None)
    pairs = c["pair_ratios"]
    add("crdcost", "  per-pair ratios", f"{pairs['min']:g}-{pairs['max']:g}", "", None)

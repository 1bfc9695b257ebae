"""Figure ``hsm``: issuance throughput through the operator with a SoftHSM2 issuer.

The same operator life alternates windows of N Certificates for an Issuer on a Cloud KMS
(emulator) key and for an Issuer on a PKCS#11 (SoftHSM2) key, ``--rounds`` of each, in
namespaces of their own, measured and cleared as figure 1's operator windows are
(``bench.figures``). The ratio of the medians is what the HSM backend costs end to end.
The token is made by ``bench.signers.softhsm_token`` before the operator starts, so the
operator inherits its ``SOFTHSM2_CONF``.
"""

from __future__ import annotations

import base64
import statistics
from typing import Any

from bench import noise
from bench.figures import _clear_operator_window, _operator_window, _setup_namespace, _watch
from bench.signers import LABEL, PIN
from bench.windows import Env, Sizes
from signet.api import GROUP, VERSION


def _hsm_issuer(env: Env, namespace: str, module: str) -> None:
    env.kube.ensure_namespace(namespace)
    secret = {
        "metadata": {"name": "hsm-pin", "namespace": namespace},
        "data": {"pin": base64.b64encode(PIN.encode()).decode()},
    }
    env.kube.core.create_namespaced_secret(namespace, secret, _preload_content=False)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer",
        "metadata": {"name": "ca", "namespace": namespace},
        "spec": {
            "kms": {
                "pkcs11": {
                    "uri": f"pkcs11:token={LABEL};object=ca",
                    "module": module,
                    "pinSecretRef": {"name": "hsm-pin"},
                }
            },
            "x509": {"selfSigned": {"commonName": f"bench {namespace} HSM CA"}},
        },
    }
    env.kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "issuers", body, _preload_content=False
    )


def hsm_phase(env: Env, sizes: Sizes, module: str) -> dict[str, Any]:
    """Cloud KMS and PKCS#11 operator windows, alternating (Cloud KMS first)."""
    n, rounds = sizes.throughput, sizes.rounds
    kms_ns = [f"bench-hsmref-{i}" for i in range(rounds)]
    hsm_ns = [f"bench-hsm-{i}" for i in range(rounds)]
    for i, namespace in enumerate(kms_ns):
        _setup_namespace(env, namespace, f"throughput-{i}")
    for namespace in hsm_ns:
        _hsm_issuer(env, namespace, module)
    env.operator.start_for([*kms_ns, *hsm_ns])
    for namespace in [*kms_ns, *hsm_ns]:
        env.kube.wait_issuer_ready(namespace, "ca")
    cloudkms: list[dict[str, Any]] = []
    pkcs11: list[dict[str, Any]] = []
    with _watch(env, [*kms_ns, *hsm_ns]) as watch:
        for i in range(rounds):
            cloudkms.append(_operator_window(env, watch, n, kms_ns[i], f"cloudkms-{i}"))
            _clear_operator_window(env, kms_ns[i])
            pkcs11.append(_operator_window(env, watch, n, hsm_ns[i], f"pkcs11-{i}"))
            _clear_operator_window(env, hsm_ns[i])
    env.operator.stop()
    kms_s = [w["seconds"] for w in cloudkms]
    hsm_s = [w["seconds"] for w in pkcs11]
    windows = [w["window"] for pair in zip(cloudkms, pkcs11, strict=True) for w in pair]
    return {
        "hsm_throughput": {
            "certificates": n,
            "rounds": rounds,
            "cloudkms_s": round(statistics.median(kms_s), 2),
            "pkcs11_s": round(statistics.median(hsm_s), 2),
            "cloudkms_per_s": round(n / statistics.median(kms_s), 1),
            "pkcs11_per_s": round(n / statistics.median(hsm_s), 1),
            "ratio": round(statistics.median(hsm_s) / statistics.median(kms_s), 2),
            "cloudkms_windows_s": noise.spread(kms_s),
            "pkcs11_windows_s": noise.spread(hsm_s),
            "cloudkms_windows": cloudkms,
            "pkcs11_windows": pkcs11,
            "noise": noise.assess(windows, hsm_s, "pkcs11 windows (s)"),
        }
    }

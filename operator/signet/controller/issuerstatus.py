"""An issuer's status: what signs now, the CA it signs under, and a rollover in progress.

The status is the issuer's memory across restarts: the signing key and its CA chain, and
during a CA rotation both keys' anchors and the phase (`signet.decisions.rotation`). It is
built whole from the resolved state and written as a merge patch of what differs.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from signet.api.times import timestamp_or_none
from signet.controller import status as st
from signet.decisions import rotation
from signet.issuance import IssuerMaterial
from signet.pki import keys

Obj = dict[str, Any]


def desired(
    current: Mapping[str, Any],
    material: IssuerMaterial | None,
    rollover: rotation.Rollover | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> Obj:
    """The whole status. Not ready, everything but the condition stays as it was, above
    all a rollover in progress and the CA it bootstrapped: an outage must restart neither."""
    now = datetime.datetime.now(datetime.UTC)
    previous = st.conditions_by_type(current).get("Ready")
    result: Obj = dict(current) if material is None else _material(material)
    result["conditions"] = [
        st.condition(
            "Ready",
            "True" if ready else "False",
            reason,
            message,
            generation=generation,
            previous=previous,
            now=now,
        )
    ]
    result["observedGeneration"] = generation
    if material is not None and rollover is not None:
        result["rotation"] = rotation.to_status(rollover)
    return result


def patch(current: Mapping[str, Any], wanted: Obj) -> Obj | None:
    """The merge patch, or None. A merge patch merges nested objects, so keys of the
    rollover the new phase no longer has are nulled explicitly."""
    result = st.status_patch(current, wanted)
    if result is None:
        return None
    before = current.get("rotation")
    if isinstance(result.get("rotation"), dict) and isinstance(before, dict):
        result["rotation"] = {**dict.fromkeys(before), **result["rotation"]}
    return result


def _material(material: IssuerMaterial) -> Obj:
    status: Obj = {
        "keyVersion": material.kms_key.key_version,
        "keyAlgorithm": material.kms_key.algorithm,
    }
    if material.chain is not None:
        ca = material.chain.issuer
        status["caCertificate"] = ca.public_bytes(serialization.Encoding.PEM).decode()
        status["caBundle"] = material.anchor.ca_bundle
        status["caFingerprint"] = ca.fingerprint(hashes.SHA256()).hex()
        status["caNotAfter"] = timestamp_or_none(ca.not_valid_after_utc)
    if material.ssh_ca_line is not None:
        status["sshCAPublicKey"] = material.ssh_ca_line
        status["sshCAFingerprint"] = keys.openssh_fingerprint(material.kms_key.public_key)
    return status

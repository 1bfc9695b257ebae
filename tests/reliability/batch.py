"""A batch of Certificates under a fresh Issuer, and the KMS signatures spent on it: how the
fault tests begin, so that each counts signatures from the same baseline the same way.

(Kept out of ``helpers.py`` only while that file is being edited elsewhere; it can move.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signet.kms.emulator import Counters
from tests.kube import Kube
from tests.reliability.helpers import KeyFactory, create_certificates, fresh_issuer


@dataclass(frozen=True)
class Batch:
    names: list[str]
    key_version: str
    counters: Counters
    base: int
    """Successful AsymmetricSign calls on the key before the batch was created."""

    def signatures(self) -> int:
        """Successful signatures of the issuer's key since the batch began."""
        return self.counters.count("AsymmetricSign", self.key_version, "OK") - self.base


def begin_batch(
    kube: Kube,
    namespace: str,
    key_factory: KeyFactory,
    counters: Counters,
    prefix: str,
    count: int,
    **spec: Any,
) -> Batch:
    """A fresh Issuer ``ca`` and ``count`` Certificates ``{prefix}00``... of ``spec`` under it."""
    key_version = fresh_issuer(kube, namespace, key_factory)
    base = counters.count("AsymmetricSign", key_version, "OK")
    names = [f"{prefix}{i:02d}" for i in range(count)]
    create_certificates(kube, namespace, "ca", names, **spec)
    return Batch(names, key_version, counters, base)

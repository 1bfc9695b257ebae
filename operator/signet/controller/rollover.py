"""What a CA rotation needs beyond the phase machine: pacing the re-issue of the old
key's leaves, counting them, and the facts the issuer controller gathers for each step.

When the new key starts signing, every leaf of the old one is due at once. Left to the
work queue they would all be signed as fast as KMS allows, a burst that competes with
ordinary issuance and, for a large issuer, renews everything in the same minute again a
lifetime later. Each leaf instead gets a slot, ``1 / reissueQPS`` apart per issuer, and
waits for it in the queue; the process-wide ``--sign-qps`` still applies on top.

Slots go oldest leaf first (earliest notBefore): that is the order in which the leaves
would have renewed on their own, so the renewal schedule after the rotation keeps its
order and its spread, and a rollover stopped midway (rolled back, or a Certificate that
cannot be re-issued) leaves only the youngest leaves on the old key.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization

from signet.api.issuer import IssuerSpec
from signet.controller.watchcache import CertId, IssuerId, WatchCache
from signet.decisions import rotation
from signet.issuance import IssuerMaterial
from signet.secretformat import layout

Obj = dict[str, Any]


class ReissuePacer:
    """Hands out re-issue slots per issuer; a Certificate keeps its slot until used."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next: dict[IssuerId, float] = {}
        self._slots: dict[CertId, float] = {}
        self._spent: dict[IssuerId, float] = {}

    def wait(self, issuer: IssuerId, cert: CertId, qps: float) -> float:
        """Seconds until ``cert`` may be re-issued; 0 means now (and spends its slot).

        A slot only orders; the pace is kept when slots are spent, an interval after the
        last one: a queue that fell behind must not catch up in one burst."""
        now, interval = self._clock(), 1.0 / qps
        slot = self._slots.get(cert)
        if slot is None:
            slot = max(now, self._next.get(issuer, now))
            self._next[issuer] = slot + interval
            self._slots[cert] = slot
        start = max(slot, self._spent.get(issuer, now - interval) + interval)
        if start > now:
            return start - now
        del self._slots[cert]
        self._spent[issuer] = now
        return 0.0

    def forget(self, cert: CertId) -> None:
        self._slots.pop(cert, None)

    def __len__(self) -> int:
        return len(self._slots)


def leaves_on(cache: WatchCache, issuer: IssuerId, key_version: str, now: datetime.datetime) -> int:
    """The issuer's Certificates whose Secret holds a leaf of ``key_version`` that has
    not expired: what still needs the key's trust anchor."""
    count = 0
    for cert in cache.issuer_links.users(issuer):
        summary = cache.summary_of(cert)
        if (
            summary is not None
            and summary.annotations.get(layout.KEY_VERSION) == key_version
            and summary.not_after is not None
            and summary.not_after > now
        ):
            count += 1
    return count


def oldest_first(cache: WatchCache, certs: Iterable[CertId]) -> list[CertId]:
    """Certificates in the order their leaves were issued; those without one first."""
    far_past = datetime.datetime.min.replace(tzinfo=datetime.UTC)

    def issued(cert: CertId) -> datetime.datetime:
        summary = cache.summary_of(cert)
        return summary.not_before if summary and summary.not_before else far_past

    return sorted(certs, key=issued)


def known_anchors(
    status: Obj, recorded: rotation.Rollover | None, previous: IssuerMaterial | None
) -> list[bytes]:
    """CA certificates this issuer made before, any of which may be reused for the key
    the spec names: a failed status write or a rollover must not cost a second bootstrap
    signature, and rolling back must bring back the old CA, not a new one."""
    found: list[bytes] = []
    pem = status.get("caCertificate")
    if isinstance(pem, str):
        found.append(pem.encode())
    for anchor in (recorded.retiring, recorded.target) if recorded else ():
        if anchor.ca_bundle:
            found.append(anchor.ca_bundle.encode())
    if previous is not None and previous.chain is not None:
        found.append(previous.chain.issuer.public_bytes(serialization.Encoding.PEM))
    return found


def queued(recorded: rotation.Rollover | None, key_version: str) -> bool:
    """A third key named while the old key's leaves are being replaced waits its turn."""
    return (
        recorded is not None
        and recorded.phase is not rotation.Phase.PROPAGATING
        and key_version not in (recorded.retiring.key_version, recorded.target.key_version)
    )


def unreissuable_lifetime(spec: IssuerSpec) -> datetime.timedelta:
    """The longest leaf the issuer signs that Signet cannot replace itself: pod
    certificates and CSRs are renewed by whoever asked for them."""
    lifetimes = [datetime.timedelta(0)]
    if spec.pod_certificates.enabled:
        lifetimes.append(min(spec.pod_certificates.default_duration, spec.policy.max_duration))
    if spec.certificate_signing_requests.enabled:
        lifetimes.append(
            min(spec.certificate_signing_requests.default_duration, spec.policy.max_duration)
        )
    return max(lifetimes)

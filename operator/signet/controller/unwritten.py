"""Certificates that were signed but not yet written: the other half of "sign once".

A KMS signature is spent, billed and audited the moment KMS answers. If the Secret write
that follows fails (a conflict, a 5xx, a reset connection, a timeout), signing again on
the next pass would spend a second signature for the same certificate and leave the first
one in the audit trail with nothing to show for it. Instead the signed result waits here
and the next pass writes it, as long as it is still what the spec asks for: the same spec
generation and content, the same issuer key, and not yet due for renewal.

Every request path keeps its waiting certificates the same way (Certificates by their
Secret, pod certificate and certificate signing requests by their status), so the store is
generic over what identifies the object and what waits for it.

The store is bounded: certificates carry their private key, and a long apiserver outage
during a burst must not grow memory without limit. An entry pushed out, or no longer
usable, is handed back so the caller can audit what became of its signature.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from signet.controller.watchcache import CertId
from signet.issuance import Issued
from signet.reasons import Reason

CAPACITY = 1000
"""Signed certificates kept for a rewrite; past this, the oldest is given up (audited)."""


class Waiting(Protocol):
    """What the audit trail needs of a certificate waiting for its write."""

    @property
    def signature(self) -> str:
        """The audit id of its signature record; delivery records point at it."""
        ...

    @property
    def serial(self) -> str: ...

    def subject(self) -> dict[str, Any]:
        """The audit fields naming the object it was signed for."""
        ...


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Waiting)


@dataclass(frozen=True)
class Unwritten:
    """A signed certificate waiting for its Secret write, and what it was signed for."""

    cert: CertId
    issued: Issued
    signature: str
    """The audit id of its signature record; delivery records point at it."""
    uid: str
    generation: int
    spec_hash: str
    key_version: str
    revision: int
    trigger: Reason
    renew_at: datetime.datetime
    """Past this the certificate is due for renewal anyway: writing it would be pointless."""

    @property
    def serial(self) -> str:
        return self.issued.serial

    def subject(self) -> dict[str, Any]:
        return {"certificate": {"namespace": self.cert[0], "name": self.cert[1], "uid": self.uid}}

    def usable_for(
        self, uid: str, generation: int, spec_hash: str, key_version: str, now: datetime.datetime
    ) -> bool:
        """Still exactly what a new signature would be asked for."""
        return (
            self.uid == uid
            and self.generation == generation
            and self.spec_hash == spec_hash
            and self.key_version == key_version
            and now < self.renew_at
        )


class UnwrittenStore(Generic[K, V]):
    """At most one waiting certificate per object, oldest given up first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def keep(self, key: K, item: V) -> list[V]:
        """Keep ``item``; returns what it replaced or pushed out (to be audited as such)."""
        given_up = []
        previous = self._items.pop(key, None)
        if previous is not None and previous.signature != item.signature:
            given_up.append(previous)
        self._items[key] = item
        while len(self._items) > self._capacity:
            _, oldest = self._items.popitem(last=False)
            given_up.append(oldest)
        return given_up

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

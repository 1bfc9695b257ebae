"""What the watches told us, kept small: the memory a reconcile pass reads instead of the API.

Certificates and Secrets arrive through kopf's watches. A pass needs the Certificate's body,
a summary of its Secret and which Certificates to wake when a Secret or an issuer changes;
reading those from memory is what makes a restart over thousands of healthy Certificates
cost no API call. Everything here is bounded or one small entry per object: bodies are
parked only until a worker takes them, and a Secret is remembered as a key-free summary.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Generic, NewType, TypeVar

from signet.api.certificate import CertificateSpec, parse_certificate_spec
from signet.controller.kubeapi import Obj
from signet.secretformat.summary import SecretSummary, summarize

CertId = NewType("CertId", tuple[str, str])
"""(namespace, name) of a Certificate."""
SecretId = NewType("SecretId", tuple[str, str])
"""(namespace, name) of a Secret."""
IssuerId = tuple[str, str, str]
"""(kind, namespace or "", name) of an Issuer or ClusterIssuer."""

PARKED_BYTES = 64 * 1024 * 1024
"""Budget of the parked bodies' JSON; past it, a pass GETs its Certificate."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
PARSED_SPECS = 1000
"""Parsed specs kept for queued passes, by (uid, generation); see `WatchCache.keep_spec`."""
T = TypeVar("T")


def cert_id(namespace: str, name: str) -> CertId:
    return CertId((namespace, name))


def secret_id(namespace: str, name: str) -> SecretId:
    return SecretId((namespace, name))


def issuer_of(namespace: str, issuer_ref: Obj) -> IssuerId | None:
    """The issuer a Certificate's raw ``spec.issuerRef`` names, if it names one."""
    name = issuer_ref.get("name")
    if not isinstance(name, str):
        return None
    if issuer_ref.get("kind") == "ClusterIssuer":
        return ("ClusterIssuer", "", name)
    return ("Issuer", namespace, name)


class Links(Generic[T]):
    """Each Certificate points at one target (its Secret, its issuer); the reverse map says
    which Certificates to wake when that target changes.

    A Secret normally has exactly one Certificate, so a lone user is stored as itself and
    only a shared target gets a set: 10,000 one-element sets would cost 2 MiB.
    """

    def __init__(self) -> None:
        self.targets: dict[CertId, T] = {}
        self._users: dict[T, CertId | set[CertId]] = {}

    def link(self, cert: CertId, target: T) -> None:
        if self.targets.get(cert) == target:
            return
        self.unlink(cert)
        self.targets[cert] = target
        users = self._users.get(target)
        if users is None:
            self._users[target] = cert
        elif isinstance(users, set):
            users.add(cert)
        else:
            self._users[target] = {users, cert}

    def unlink(self, cert: CertId) -> None:
        old = self.targets.pop(cert, None)
        if old is None:
            return
        users = self._users[old]
        if isinstance(users, set) and len(users) > 1:
            users.discard(cert)
        else:
            del self._users[old]

    def users(self, target: T) -> list[CertId]:
        users = self._users.get(target)
        if users is None:
            return []
        return list(users) if isinstance(users, set) else [users]


class ParkedBodies:
    """Watched Certificate bodies waiting for their pass, each kept as one compact JSON
    string.

    A pass needs the whole body (metadata, spec, status), and a burst queues thousands
    before a worker gets to them. As dicts, a body is hundreds of small objects: parking
    every queued one cost more memory than the steady state, so only a fixed number
    were parked and every pass past them paid a GET. One string per body is a fraction of
    that, and reading it back costs microseconds where a GET costs milliseconds and an
    apiserver request. What no pass reads is dropped first: the apiserver's field-ownership
    bookkeeping and kubectl's copy of the applied spec.
    """

    def __init__(self, budget: int = PARKED_BYTES) -> None:
        self._budget = budget
        self._bodies: dict[CertId, str] = {}
        self._size = 0

    def __len__(self) -> int:
        return len(self._bodies)

    def __contains__(self, cert: object) -> bool:
        return cert in self._bodies

    @property
    def size(self) -> int:
        """Characters held (ASCII JSON: about the bytes)."""
        return self._size

    def put(self, cert: CertId, body: Obj) -> bool:
        """Park a body, replacing an older one of the same Certificate; False if it does
        not fit in the budget (its pass will read it)."""
        metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        annotations = metadata.get("annotations")
        if annotations and LAST_APPLIED in annotations:
            metadata["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        text = json.dumps({**body, "metadata": metadata}, separators=(",", ":"))
        self.discard(cert)
        if self._size + len(text) > self._budget:
            return False
        self._bodies[cert] = text
        self._size += len(text)
        return True

    def take(self, cert: CertId) -> Obj | None:
        text = self._bodies.pop(cert, None)
        if text is None:
            return None
        self._size -= len(text)
        body: Obj = json.loads(text)
        return body

    def discard(self, cert: CertId) -> None:
        text = self._bodies.pop(cert, None)
        if text is not None:
            self._size -= len(text)


def _resource_version(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


class WatchCache:
    """Parked Certificate bodies, Secret summaries, the links between them and parsed specs.

    ``wake`` is called with every Certificate whose Secret changed under it.
    """

    def __init__(self, wake: Callable[[CertId], None]) -> None:
        self._wake = wake
        self.parked = ParkedBodies()
        self.secrets: dict[SecretId, SecretSummary] = {}
        self.secret_links: Links[SecretId] = Links()
        self.issuer_links: Links[IssuerId] = Links()
        self._writing: dict[SecretId, tuple[Obj, bool] | None] = {}
        self._specs: dict[tuple[str, int | None], CertificateSpec] = {}

    # -- Certificates ---------------------------------------------------------------------
    def index(self, cert: CertId, spec: Obj) -> None:
        """Link a Certificate to the Secret and issuer its raw spec names (before parsing:
        a spec that does not parse must still be woken when its issuer appears)."""
        secret_name = spec.get("secretName")
        if isinstance(secret_name, str):
            self.secret_links.link(cert, secret_id(cert[0], secret_name))
        issuer = issuer_of(cert[0], spec.get("issuerRef") or {})
        if issuer is not None:
            self.issuer_links.link(cert, issuer)

    def summary_of(self, cert: CertId) -> SecretSummary | None:
        """The summary of the Secret a Certificate names, if that Secret was seen."""
        secret = self.secret_links.targets.get(cert)
        return self.secrets.get(secret) if secret is not None else None

    def forget(self, cert: CertId) -> None:
        self.parked.discard(cert)
        self.secret_links.unlink(cert)
        self.issuer_links.unlink(cert)

    def park(self, cert: CertId, body: Obj) -> None:
        """Keep a body for its pass, which then saves a GET."""
        self.parked.put(cert, body)

    def spec(self, body: Obj) -> CertificateSpec:
        """The parsed spec, kept from an earlier look at the same generation if there was
        one (see keep_spec). Raises SpecError."""
        metadata = body["metadata"]
        spec = self._specs.get((metadata["uid"], metadata.get("generation")))
        return spec if spec is not None else parse_certificate_spec(body.get("spec") or {})

    def keep_spec(self, body: Obj, spec: CertificateSpec) -> None:
        """Keep a spec for the pass about to be queued. A new Certificate is looked at three
        times within seconds (created, its pass, its own status patch); parsing and hashing
        its spec each time was a visible share of the operator's CPU while issuing. The
        apiserver bumps the generation on every spec change. Specs of Certificates that
        need no pass (all of them, after a restart) are not kept: they would only pin
        memory."""
        metadata = body["metadata"]
        generation = metadata.get("generation")
        if not isinstance(generation, int):
            return
        if len(self._specs) >= PARSED_SPECS:
            del self._specs[next(iter(self._specs))]
        self._specs[(metadata["uid"], generation)] = spec

    def forget_parsed_specs(self) -> None:
        """Once a burst is over: the parsed specs help only while it lasts."""
        self._specs.clear()

    # -- Secrets --------------------------------------------------------------------------
    def observe_secret(self, body: Obj, deleted: bool) -> None:
        metadata = body["metadata"]
        ident = secret_id(metadata["namespace"], metadata["name"])
        if ident in self._writing:
            self._writing[ident] = (body, deleted)  # see own_write
            return
        current = self.secrets.get(ident)
        if deleted:
            self.secrets.pop(ident, None)
        else:
            version = str(metadata.get("resourceVersion", ""))
            if current is not None and (
                current.resource_version == version
                or _resource_version(version) < _resource_version(current.resource_version)
            ):
                return  # our own write, already summarised, or a stale event
            self.secrets[ident] = summarize(body)
        for cert in self.secret_links.users(ident):
            self._wake(cert)

    def record_secret(self, ident: SecretId, body: Obj | None, *, ours: bool = False) -> None:
        """What a write returned (``ours``) or a read found (None: it does not exist)."""
        if body is None:
            self.secrets.pop(ident, None)
        else:
            self.secrets[ident] = summarize(body, written_by_us=ours)

    @contextlib.contextmanager
    def own_write(self, ident: SecretId) -> Iterator[None]:
        """Hold the Secret's watch events while Signet writes it and records the result.

        The watch often delivers a write before its response does. Taken then, our own
        write would look like someone else's: a full summary (the key loaded back) and a
        second pass over the Certificate, with a GET. Held and taken after the summary of
        the response is in place, it is recognised by its resourceVersion; a newer one
        (someone else's write after ours) is taken as usual.
        """
        self._writing[ident] = None
        try:
            yield
        finally:
            held = self._writing.pop(ident, None)
            if held is not None:
                self.observe_secret(*held)

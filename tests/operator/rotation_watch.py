"""A record of what the apiserver saw during a CA rotation, in the apiserver's own order.

Trust ConfigMaps and Secrets are watched from one resourceVersion taken before the key
changes; etcd orders every write of the cluster, so "the new anchor reached every bundle
before the first leaf of the new key was written" is a comparison of resourceVersions,
not of clocks or polling intervals.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.secretformat import layout
from tests.kube import Kube


def anchors(pem: str | None) -> frozenset[str]:
    """SHA-256 of each certificate in a PEM bundle."""
    if not pem:
        return frozenset()
    return frozenset(
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest()
        for c in x509.load_pem_x509_certificates(pem.encode())
    )


@dataclass(frozen=True)
class Seen:
    revision: int
    kind: str
    namespace: str
    name: str
    anchors: frozenset[str] = frozenset()
    ssh_lines: int = 0
    key_version: str | None = None


@dataclass
class Timeline:
    """Watches ConfigMaps and Secrets made by Signet, cluster-wide, until stopped."""

    kube: Kube
    events: list[Seen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        core = self.kube.core
        for lister, kind in (
            (core.list_config_map_for_all_namespaces, "ConfigMap"),
            (core.list_secret_for_all_namespaces, "Secret"),
        ):
            since = lister(label_selector=layout.SELECTOR, limit=1).metadata.resource_version
            thread = threading.Thread(target=self._watch, args=(lister, kind, since), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _watch(self, lister: Any, kind: str, since: str) -> None:
        watch = kubernetes.watch.Watch()
        try:
            while not self._stop.is_set():
                for event in watch.stream(
                    lister,
                    label_selector=layout.SELECTOR,
                    resource_version=since,
                    timeout_seconds=2,
                    allow_watch_bookmarks=False,
                ):
                    obj = event["object"]
                    since = obj.metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.events.append(self._seen(kind, obj))
        except BaseException as error:
            self._errors.append(error)

    @staticmethod
    def _seen(kind: str, obj: Any) -> Seen:
        meta = obj.metadata
        common = (int(meta.resource_version), kind, meta.namespace, meta.name)
        if kind == "ConfigMap":
            data = obj.data or {}
            return Seen(
                *common,
                anchors=anchors(data.get("ca.crt")),
                ssh_lines=len((data.get("ssh-ca.pub") or "").splitlines()),
            )
        key_version = (meta.annotations or {}).get(layout.KEY_VERSION)
        return Seen(*common, key_version=key_version)

    def stop(self) -> list[Seen]:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        assert not self._errors, self._errors
        return sorted(self.events, key=lambda seen: seen.revision)

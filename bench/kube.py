"""The harness's side of the API: bulk creates, a Certificate watch, apiserver metrics.

Requests are sent with ``_preload_content=False`` so the harness does not spend its CPU
turning responses into model objects; it shares two cores with everything it measures.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException

from signet.api import GROUP, VERSION
from signet.controller.kubeapi import KubeApi
from signet.secretformat import layout
from signet_dev import metrics
from signet_dev.kube import KubeClient

Obj = dict[str, Any]
CertKey = tuple[str, str]


class Kube(KubeClient):
    """The shared client with a connection per worker thread, and the harness's bulk
    operations on top."""

    def __init__(self, kubeconfig: Path, threads: int = 32) -> None:
        super().__init__(kubeconfig, pool=threads)
        self.threads = threads

    # -- writes ------------------------------------------------------------------------
    def ensure_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.create_namespace({"metadata": {"name": name}}, _preload_content=False)

    def create_certificate(self, body: Obj) -> None:
        namespace = body["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "certificates", body, _preload_content=False
        )

    def create_issuer(self, namespace: str, name: str, key_version: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Issuer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "kms": {"cloudKMS": {"keyVersion": key_version}},
                "x509": {"selfSigned": {"commonName": f"bench {namespace} CA"}},
            },
        }
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "issuers", body, _preload_content=False
        )

    def wait_issuer_ready(self, namespace: str, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "issuers", name
            )
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (obj.get("status") or {}).get("conditions") or []
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"Issuer {namespace}/{name} not Ready after {timeout}s")

    def create_certificates_at_once(self, bodies: Sequence[Obj], concurrency: int = 32) -> float:
        """POST every Certificate concurrently through one aiohttp session (the operator's
        own client); returns the wall seconds. The thread pool of :meth:`parallel` spent
        ~2.6 s of the machine's two cores on 500 creates, competing with what is measured."""
        os.environ["KUBECONFIG"] = str(self.kubeconfig)
        start = time.perf_counter()
        asyncio.run(create_certificates(bodies, concurrency))
        return time.perf_counter() - start

    def parallel(self, fn: Callable[[Any], object], items: Iterable[Any]) -> float:
        """Run ``fn`` over ``items`` on ``threads`` threads; returns the wall seconds."""
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()
        return time.perf_counter() - start

    def create_unrelated_secret(self, namespace: str, name: str, size: int) -> None:
        payload = base64.b64encode(os.urandom(size)).decode()
        body = {"metadata": {"name": name, "namespace": namespace}, "data": {"blob": payload}}
        self.core.create_namespaced_secret(namespace, body, _preload_content=False)

    # -- reads -------------------------------------------------------------------------
    def certificate_and_secret(self, namespace: str, name: str) -> tuple[Obj, Obj]:
        """A Certificate and the Secret it names, as the API returns them."""
        certificate: Obj = json.loads(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "certificates", name, _preload_content=False
            ).data
        )
        secret: Obj = json.loads(
            self.core.read_namespaced_secret(
                certificate["spec"]["secretName"], namespace, _preload_content=False
            ).data
        )
        return certificate, secret

    def _list_raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Obj]:
        items: list[Obj] = []
        token = None
        while True:
            extra: dict[str, str] = {"_continue": token} if token else {}
            response = fn(*args, limit=1000, _preload_content=False, **kwargs, **extra)
            page = json.loads(response.data)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def certificate_versions(self, namespaces: Sequence[str]) -> dict[CertKey, str]:
        wanted = set(namespaces)
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in self._list_raw(
                self.custom.list_cluster_custom_object, GROUP, VERSION, "certificates"
            )
            if o["metadata"]["namespace"] in wanted
        }

    def secret_versions(self, namespaces: Sequence[str]) -> dict[CertKey, str]:
        wanted = set(namespaces)
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in self._list_raw(
                self.core.list_secret_for_all_namespaces, label_selector=layout.SELECTOR
            )
            if o["metadata"]["namespace"] in wanted
        }

    def server_version(self) -> str:
        response = self.api.call_api("GET", self.api.configuration.host + "/version")
        version: str = json.loads(response.read()).get("gitVersion", "")
        return version

    def apiserver_profile(self, seconds: int) -> bytes:
        """A Go CPU profile of the apiserver over the next ``seconds`` (needs --profiling)."""
        response = self.api.call_api(
            "GET",
            self.api.configuration.host + f"/debug/pprof/profile?seconds={seconds}",
            _request_timeout=seconds + 30,
        )
        data: bytes = response.read()
        return data

    def apiserver_requests(self) -> dict[str, float]:
        """``apiserver_request_total`` summed per ``verb resource`` (admin kubeconfig)."""
        response = self.api.call_api("GET", self.api.configuration.host + "/metrics")
        totals: dict[str, float] = {}
        for labels, value in metrics.samples(response.read().decode(), "apiserver_request_total"):
            key = f"{labels.get('verb', '')} {labels.get('resource', '')}"
            totals[key] = totals.get(key, 0.0) + value
        return totals


async def create_certificates(
    bodies: Sequence[Obj],
    concurrency: int = 32,
    created: Callable[[Obj], None] | None = None,
) -> None:
    """POST the Certificates, ``concurrency`` at a time over one session ($KUBECONFIG);
    ``created`` is given each one as the POST returns it (with its uid)."""
    api = KubeApi(connections=concurrency)
    slots = asyncio.Semaphore(concurrency)

    async def create(body: Obj) -> None:
        namespace = body["metadata"]["namespace"]
        async with slots:
            answer = await api.request(
                "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/certificates", body
            )
        if created is not None:
            created(answer)

    try:
        await asyncio.gather(*(create(body) for body in bodies))
    finally:
        await api.close()


def certificate_body(
    namespace: str,
    name: str,
    *,
    issuer: str = "ca",
    duration: str = "24h",
    renew_before: str | None = None,
) -> Obj:
    spec: Obj = {
        "issuerRef": {"name": issuer},
        "secretName": f"{name}-tls",
        "duration": duration,
        "privateKey": {"algorithm": "ECDSA", "size": 256},
        "x509": {"dnsNames": [f"{name}.{namespace}.svc"]},
    }
    if renew_before is not None:
        spec["renewBefore"] = renew_before
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def is_ready(obj: Obj) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


class CertificateWatch:
    """A background watch on Certificates in some namespaces, stamping with
    ``time.perf_counter()`` when each one is first seen Ready and each status revision
    (with its notAfter) first appears."""

    def __init__(self, kube: Kube, namespaces: Sequence[str]) -> None:
        self._kube = kube
        self._namespaces = set(namespaces)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.ready_at: dict[CertKey, float] = {}
        self.revisions: dict[CertKey, dict[int, tuple[float, str]]] = {}
        self._thread = threading.Thread(target=self._run, name="certificate-watch", daemon=True)
        self._resource_version = ""
        self.error: BaseException | None = None

    def start(self) -> CertificateWatch:
        self.start_over()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _observe(self, obj: Obj, now: float) -> None:
        metadata = obj["metadata"]
        if metadata["namespace"] not in self._namespaces:
            return
        key = (metadata["namespace"], metadata["name"])
        status = obj.get("status") or {}
        with self._changed:
            if is_ready(obj):
                self.ready_at.setdefault(key, now)
                revision = status.get("revision")
                if isinstance(revision, int):
                    self.revisions.setdefault(key, {}).setdefault(
                        revision, (now, str(status.get("notAfter") or ""))
                    )
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._watch_once()
                except ApiException as error:
                    if error.status != 410:
                        raise
                    self.start_over()
        except BaseException as error:  # surfaced by wait()
            self.error = error
            with self._changed:
                self._changed.notify_all()

    def start_over(self) -> None:
        response = self._kube.custom.list_cluster_custom_object(
            GROUP, VERSION, "certificates", _preload_content=False
        )
        page = json.loads(response.data)
        now = time.perf_counter()
        for obj in page.get("items") or []:
            self._observe(obj, now)
        self._resource_version = page["metadata"]["resourceVersion"]

    def _watch_once(self) -> None:
        response = self._kube.custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            "certificates",
            watch=True,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
            _preload_content=False,
        )
        buffer = b""
        try:
            for chunk in response.stream(65536, decode_content=False):
                now = time.perf_counter()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            raise ApiException(status=410, reason="Expired")
                        continue
                    self._resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._observe(obj, now)
                if self._stop.is_set():
                    return
        finally:
            response.release_conn()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (called under the lock) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                if self.error is not None:
                    raise RuntimeError("certificate watch failed") from self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 1.0))
            return True

    def count_ready(self, keys: Iterable[CertKey]) -> int:
        return sum(1 for key in keys if key in self.ready_at)

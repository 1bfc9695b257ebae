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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes.client import ApiException
from multidict import CIMultiDict

from signet.api import GROUP, VERSION
from signet.controller.kubeapi import (
    CERTIFICATES_GROUP,
    KubeApi,
    login_from_environment,
    open_session,
)
from signet.secretformat import layout
from signet_dev import metrics
from signet_dev.kube import KubeClient

Obj = dict[str, Any]
CertKey = tuple[str, str]
"""(namespace, name) of a Certificate or PodCertificateRequest."""
PCR_PLURAL = "podcertificaterequests"


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

    def create_issuer(
        self, namespace: str, name: str, key_version: str, *, pod_certificates: bool = False
    ) -> None:
        """A self-signed Issuer; ``pod_certificates`` opts it in to answer
        PodCertificateRequests for its signer ``issuers.signet.dev/<namespace>.<name>``."""
        spec: Obj = {
            "kms": {"cloudKMS": {"keyVersion": key_version}},
            "x509": {"selfSigned": {"commonName": f"bench {namespace} CA"}},
        }
        if pod_certificates:
            spec["podCertificates"] = {"enabled": True}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Issuer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
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

    def create_node(self, name: str) -> tuple[str, str]:
        """A Node object no kubelet serves (requests are made in its name); (name, uid)."""
        with contextlib.suppress(ApiException):
            self.core.create_node({"metadata": {"name": name}}, _preload_content=False)
        node = json.loads(self.core.read_node(name, _preload_content=False).data)
        return name, str(node["metadata"]["uid"])

    def create_node_pods(
        self, namespace: str, node: tuple[str, str], signer: str, count: int
    ) -> list[NodePod]:
        """A ServiceAccount and ``count`` pods bound to ``node`` that mount a
        ``podCertificate`` volume for ``signer`` (NodeRestriction admits a request only for
        a signer its pod mounts). The pods never run: no kubelet serves the node."""
        account = "bench"
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_service_account(
                namespace, {"metadata": {"name": account}}, _preload_content=False
            )
        sa = json.loads(
            self.core.read_namespaced_service_account(
                account, namespace, _preload_content=False
            ).data
        )
        volume = {
            "name": "identity",
            "projected": {
                "sources": [
                    {
                        "podCertificate": {
                            "signerName": signer,
                            "keyType": "ECDSAP256",
                            "credentialBundlePath": "bundle.pem",
                        }
                    }
                ]
            },
        }
        pods = []
        for index in range(count):
            body = {
                "metadata": {"name": f"pod-{index:03d}", "namespace": namespace},
                "spec": {
                    "nodeName": node[0],
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "app",
                            "image": "signet.invalid/never-runs",
                            "volumeMounts": [{"name": "identity", "mountPath": "/var/run/id"}],
                        }
                    ],
                    "volumes": [volume],
                },
            }
            pod = json.loads(
                self.core.create_namespaced_pod(namespace, body, _preload_content=False).data
            )
            pods.append(
                NodePod(
                    namespace=namespace,
                    name=pod["metadata"]["name"],
                    uid=pod["metadata"]["uid"],
                    service_account=account,
                    service_account_uid=sa["metadata"]["uid"],
                    node=node[0],
                    node_uid=node[1],
                )
            )
        return pods

    def delete_window_objects(self, namespace: str) -> None:
        """Delete a window's Certificates, PodCertificateRequests and Events in
        ``namespace``. Signet's Secrets go separately (`delete_signet_secrets`), once the
        operator has let go of their Certificates: a Secret deleted under a Certificate
        the operator still knows is issued again."""
        for group, version, plural in (
            (GROUP, VERSION, "certificates"),
            (CERTIFICATES_GROUP, "v1", PCR_PLURAL),
        ):
            self.custom.delete_collection_namespaced_custom_object(
                group, version, namespace, plural, _preload_content=False
            )
        self.core.delete_collection_namespaced_event(namespace, _preload_content=False)

    def delete_signet_secrets(self, namespace: str) -> None:
        self.core.delete_collection_namespaced_secret(
            namespace, label_selector=layout.SELECTOR, _preload_content=False
        )

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

    def pcr_versions(self, namespace: str) -> dict[CertKey, str]:
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in self._list_raw(
                self.custom.list_namespaced_custom_object,
                CERTIFICATES_GROUP,
                "v1",
                namespace,
                PCR_PLURAL,
            )
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
    """A Certificate whose Ready condition is True for its current generation."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pcr_answer(obj: Obj) -> str | None:
    """A PodCertificateRequest's one answer (Issued, Denied or Failed), if it has one."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Issued", "Denied", "Failed"):
            return str(condition["type"])
    return None


class ObjectWatch:
    """A background watch on one resource in some namespaces, stamping with
    ``time.perf_counter()`` when each object is first seen ``ready``; an object seen
    ``refused`` (a PodCertificateRequest Denied or Failed) is recorded with why, so a
    waiter can stop at once instead of timing out."""

    def __init__(
        self,
        kube: Kube,
        namespaces: Sequence[str],
        *,
        group: str,
        version: str,
        plural: str,
        ready: Callable[[Obj], bool],
        refused: Callable[[Obj], str | None] = lambda obj: None,
    ) -> None:
        self._kube = kube
        self._namespaces = set(namespaces)
        self._resource = (group, version, plural)
        self._ready = ready
        self._refused = refused
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.ready_at: dict[CertKey, float] = {}
        self.refusals: dict[CertKey, str] = {}
        self._thread = threading.Thread(target=self._run, name=f"{plural}-watch", daemon=True)
        self._resource_version = ""
        self.error: BaseException | None = None

    def start(self) -> ObjectWatch:
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
        with self._changed:
            if self._ready(obj):
                self.ready_at.setdefault(key, now)
            elif (why := self._refused(obj)) is not None:
                self.refusals.setdefault(key, why)
            self._seen(key, obj, now)
            self._changed.notify_all()

    def _seen(self, key: CertKey, obj: Obj, now: float) -> None:
        """Subclasses record more of each event here (under the lock)."""

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
            *self._resource, _preload_content=False
        )
        page = json.loads(response.data)
        now = time.perf_counter()
        for obj in page.get("items") or []:
            self._observe(obj, now)
        self._resource_version = page["metadata"]["resourceVersion"]

    def _watch_once(self) -> None:
        response = self._kube.custom.list_cluster_custom_object(
            *self._resource,
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
        """Wait until ``predicate()`` (called under the lock) holds; False on timeout.
        Raises if the watch failed or an object was refused."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                if self.error is not None:
                    raise RuntimeError("watch failed") from self.error
                if self.refusals:
                    key, why = next(iter(self.refusals.items()))
                    raise RuntimeError(f"{key[0]}/{key[1]} was answered {why}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 1.0))
            return True

    def wait_all(self, keys: Sequence[CertKey], timeout: float) -> float:
        """Wait until every one of ``keys`` is ready; the ``perf_counter`` stamp of the
        last one. Raises TimeoutError naming how many were."""
        if not self.wait(lambda: self.count_ready(keys) == len(keys), timeout):
            raise TimeoutError(f"only {self.count_ready(keys)}/{len(keys)} ready in {timeout:g}s")
        return max(self.ready_at[k] for k in keys)

    def count_ready(self, keys: Iterable[CertKey]) -> int:
        return sum(1 for key in keys if key in self.ready_at)


class CertificateWatch(ObjectWatch):
    """Certificates: also each status revision (with its notAfter) when it first appears."""

    def __init__(self, kube: Kube, namespaces: Sequence[str]) -> None:
        super().__init__(
            kube, namespaces, group=GROUP, version=VERSION, plural="certificates", ready=is_ready
        )
        self.revisions: dict[CertKey, dict[int, tuple[float, str]]] = {}

    def _seen(self, key: CertKey, obj: Obj, now: float) -> None:
        status = obj.get("status") or {}
        revision = status.get("revision")
        if is_ready(obj) and isinstance(revision, int):
            self.revisions.setdefault(key, {}).setdefault(
                revision, (now, str(status.get("notAfter") or ""))
            )

    def start(self) -> CertificateWatch:
        super().start()
        return self


def pcr_watch(kube: Kube, namespaces: Sequence[str]) -> ObjectWatch:
    """PodCertificateRequests, ready once Issued; Denied or Failed ends a wait at once."""
    return ObjectWatch(
        kube,
        namespaces,
        group=CERTIFICATES_GROUP,
        version="v1",
        plural=PCR_PLURAL,
        ready=lambda obj: pcr_answer(obj) == "Issued",
        refused=lambda obj: answer if (answer := pcr_answer(obj)) != "Issued" else None,
    )


# -- PodCertificateRequests, as a kubelet makes them ---------------------------------------


@dataclass(frozen=True)
class NodePod:
    """A pod bound to a node, with what a PodCertificateRequest for it must repeat."""

    namespace: str
    name: str
    uid: str
    service_account: str
    service_account_uid: str
    node: str
    node_uid: str


def stub_csr(key: ec.EllipticCurvePrivateKey) -> str:
    """The kubelet's stub: an empty-subject PKCS#10 request signed by the pod's new key,
    base64 DER."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def pcr_body(pod: NodePod, name: str, signer: str) -> Obj:
    """A PodCertificateRequest for ``pod`` with a fresh P-256 key (``ECDSAP256``, the key
    type the pods mount)."""
    return {
        "apiVersion": f"{CERTIFICATES_GROUP}/v1",
        "kind": "PodCertificateRequest",
        "metadata": {
            "name": name,
            "namespace": pod.namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
            ],
        },
        "spec": {
            "signerName": signer,
            "podName": pod.name,
            "podUID": pod.uid,
            "serviceAccountName": pod.service_account,
            "serviceAccountUID": pod.service_account_uid,
            "nodeName": pod.node,
            "nodeUID": pod.node_uid,
            "stubPKCS10Request": stub_csr(ec.generate_private_key(ec.SECP256R1())),
        },
    }


class NodeSession:
    """POSTs PodCertificateRequests as the kubelet of ``node`` would: the admin's
    credentials impersonating ``system:node:<node>`` in ``system:nodes``, so that the Node
    authorizer and NodeRestriction admission check each request against the live pod,
    ServiceAccount and node, exactly as for a kubelet. One aiohttp session ($KUBECONFIG),
    ``concurrency`` requests at a time."""

    def __init__(self, node: str, concurrency: int = 32) -> None:
        info = login_from_environment()
        if info is None:
            raise RuntimeError("no kubeconfig in $KUBECONFIG")
        self._server = info.server.rstrip("/")
        self._session = open_session(info, connections=concurrency)
        self._slots = asyncio.Semaphore(concurrency)
        self._headers = CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Impersonate-User", f"system:node:{node}"),
                ("Impersonate-Group", "system:nodes"),
                ("Impersonate-Group", "system:authenticated"),
            ]
        )

    async def close(self) -> None:
        await self._session.close()

    async def create(self, body: Obj) -> Obj:
        """POST one request; the apiserver's answer (with uid and resourceVersion)."""
        namespace = body["metadata"]["namespace"]
        path = f"/apis/{CERTIFICATES_GROUP}/v1/namespaces/{namespace}/{PCR_PLURAL}"
        async with (
            self._slots,
            self._session.post(
                self._server + path, data=json.dumps(body), headers=self._headers
            ) as response,
        ):
            payload = await response.read()
            if response.status >= 300:
                raise RuntimeError(
                    f"creating {namespace}/{body['metadata']['name']} as the node: HTTP "
                    f"{response.status}: {payload[:500].decode(errors='replace')}"
                )
        created: Obj = json.loads(payload)
        return created

    async def create_all(
        self, bodies: Sequence[Obj], created: Callable[[Obj], None] | None = None
    ) -> None:
        """POST every request at once (``concurrency`` in flight); ``created`` is given
        each one as its POST returns."""

        async def one(body: Obj) -> None:
            answer = await self.create(body)
            if created is not None:
                created(answer)

        await asyncio.gather(*(one(body) for body in bodies))

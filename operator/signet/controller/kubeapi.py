"""The few Kubernetes API calls the controller makes, as plain-dict coroutines.

kopf owns the watches of a few kinds; this owns the writes and the informer's lists and
watches (`signet.controller.informer`: Certificates, Secrets, issuers). It speaks to the
apiserver the way kopf does: aiohttp on the operator's event loop, with credentials from
kopf's own login functions (the projected ServiceAccount token in a pod, else the
kubeconfig). The official ``kubernetes`` client is not used here on purpose: it is
synchronous (every call a thread hop), turns responses into generated model objects, and
importing it costs the operator about 45 MiB of its 200 MiB budget (see
``bench/README.md``).

Like client-go, a call rides out what a healthy control plane does now and then (an
apiserver restarting behind a load balancer, priority-and-fairness answering 429, an idle
keep-alive connection closed under us) with a few retries, jittered so that many workers
do not come back in step, and bounded in attempts and time so that a reconcile still ends.
Callers see one exception type, :class:`ApiError`, whatever went wrong on the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from signet.api import GROUP, VERSION

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Login = Callable[[], kopf.ConnectionInfo | None]
PLURALS = {"Certificate": "certificates", "Issuer": "issuers", "ClusterIssuer": "clusterissuers"}
MERGE_PATCH = "application/merge-patch+json"
CERTIFICATES_GROUP = "certificates.k8s.io"

CONNECTION_ERROR = "ConnectionError"
"""``ApiError.reason`` when no answer came: refused, reset, closed mid-answer."""
TIMEOUT = "Timeout"
"""``ApiError.reason`` when no answer came within the per-request timeout."""
TLS_ERROR = "TLSError"
"""``ApiError.reason`` when the server's certificate was not trusted: retrying cannot help."""
INVALID_RESPONSE = "InvalidResponse"
"""``ApiError.reason`` when an answer came but could not be read as one."""
NO_ANSWER = 0
"""``ApiError.status`` when the apiserver gave no HTTP answer at all."""
_TRANSIENT_REASONS = frozenset({CONNECTION_ERROR, TIMEOUT})
MIN_RETRY_TIMEOUT = 0.5
"""A retry is not started with less time than this left before the deadline."""


class ApiError(Exception):
    """A non-2xx answer, or no usable answer at all (``status`` 0, ``reason`` saying why).
    ``message`` is the apiserver's own explanation (its Status message) or the client's
    description of the failure, never the request body, so it is safe to put in a condition
    or an Event."""

    def __init__(self, status: int, reason: str, message: str, *, attempts: int = 1) -> None:
        text = f"HTTP {status} {reason}: {message}" if status else f"{reason}: {message}"
        super().__init__(text + (f" (after {attempts} attempts)" if attempts > 1 else ""))
        self.status = status
        self.reason = reason
        self.message = message
        self.attempts = attempts
        """How many requests were made before giving up (retries included)."""

    @property
    def transient(self) -> bool:
        """Whether the same request may well succeed later: throttled (429), a server-side
        failure (5xx), or no answer (connection lost, timeout). A caller that keeps state
        should retry later rather than report the object broken."""
        if self.status == NO_ANSWER:
            return self.reason in _TRANSIENT_REASONS
        return self.status == 429 or self.status >= 500


def login_from_environment(
    settings: kopf.OperatorSettings | None = None,
) -> kopf.ConnectionInfo | None:
    """``$KUBECONFIG`` when set (``signet run --kubeconfig`` sets it), else the pod's
    projected ServiceAccount token, else ``~/.kube/config``.

    kopf's watches and Signet's writes log in the same way, with the same identity.
    """
    settings = settings or kopf.OperatorSettings()
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(settings=settings)
    in_pod = kopf.login_with_service_account(settings=settings)
    return in_pod or kopf.login_with_kubeconfig(settings=settings)


def open_session(
    info: kopf.ConnectionInfo,
    *,
    connections: int = 0,
    timeout: aiohttp.ClientTimeout | None = None,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session speaking to the apiserver as ``info`` says (TLS, credentials,
    proxy); what kopf builds for itself, shared here so both sides connect alike.

    It asks for uncompressed answers. The apiserver gzips any answer over 128 KiB that a
    client accepts gzipped, which every page of a listing is; an operator runs next to its
    apiserver, where compressing costs both ends more CPU than the bytes it saves cost the
    network. kube-controller-manager and kube-scheduler turn it off for that reason
    (client-go's ``DisableCompression``)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": "signet", "Accept-Encoding": "identity"},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        timeout=timeout or aiohttp.ClientTimeout(total=None),
        trace_configs=trace_configs,
    )


class KubeApi:
    """The apiserver client: one session, shared, logged in lazily and again after a 401.

    Retries follow client-go: throttling (429, after its ``Retry-After``), server errors
    (500, 502, 503, 504), lost connections and timeouts are tried again with exponential
    backoff and jitter, at most ``attempts`` requests in all, and none started once
    ``retry_deadline`` seconds have passed since the call began. A retry gets what is left
    of that budget as its timeout (never more than ``timeout``), so a call ends within
    about ``max(timeout, retry_deadline)``.

    Every method is retried, POST included: a create that reached etcd before the
    connection broke comes back as 409 AlreadyExists on the retry, which every caller
    already treats as "someone (here: we) wrote it"; a PUT carrying ``resourceVersion``
    comes back as 409 Conflict in the same case. Merge patches are idempotent.
    """

    def __init__(
        self,
        login: Login = login_from_environment,
        *,
        connections: int = 16,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        attempts: int = 5,
        retry_deadline: float = 30.0,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 10.0,
    ) -> None:
        """``timeout`` bounds each request (connect, send, answer read in full);
        ``backoff`` is the first wait between attempts, doubled each time up to
        ``max_backoff``; a ``Retry-After`` longer than ``max_retry_after`` is cut to it."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._login = login
        self._connections = connections
        self._request_timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._attempts = attempts
        self._retry_deadline = retry_deadline
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    def _connect(self) -> aiohttp.ClientSession:
        info = self._login()
        if info is None:
            raise RuntimeError("no Kubernetes credentials: no ServiceAccount token, no kubeconfig")
        self._server = info.server.rstrip("/")
        self._session = open_session(info, connections=self._connections, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        # Forgotten before it is closed: a call starting meanwhile logs in anew rather than
        # picking up a session that is going away.
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One call, decoded, retried as the class says. A 401 logs in again once (projected
        tokens rotate) without counting as an attempt. Raises only :class:`ApiError`."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": content_type} if data is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_deadline
        budget = self._request_timeout
        logged_in_again = False
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                async with asyncio.timeout(budget):
                    session = self._session or self._connect()
                    async with session.request(
                        method, self._server + path, data=data, params=params, headers=headers
                    ) as response:
                        payload = await response.read()
                        status, reason = response.status, response.reason or ""
                        retry_after = _retry_after(response.headers.get("Retry-After"))
            except TimeoutError as error:  # aiohttp's own timeouts are TimeoutErrors too
                failure = ApiError(NO_ANSWER, TIMEOUT, _describe(error, budget), attempts=attempt)
            except aiohttp.ClientConnectorCertificateError as error:
                raise ApiError(NO_ANSWER, TLS_ERROR, _describe(error), attempts=attempt) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                failure = ApiError(NO_ANSWER, CONNECTION_ERROR, _describe(error), attempts=attempt)
            except aiohttp.ClientError as error:
                raise ApiError(
                    NO_ANSWER, INVALID_RESPONSE, _describe(error), attempts=attempt
                ) from None
            except OSError as error:  # a socket error aiohttp did not wrap
                failure = ApiError(NO_ANSWER, CONNECTION_ERROR, _describe(error), attempts=attempt)
            else:
                if status == 401 and not logged_in_again:
                    logger.warning("apiserver answered 401; logging in again")
                    logged_in_again = True
                    attempt -= 1
                    await self.close()
                    continue
                if status < 400:
                    return _decode(status, payload, attempt)
                failure = ApiError(status, reason, _message(payload), attempts=attempt)
            if not failure.transient or attempt >= self._attempts:
                raise failure
            if retry_after is not None:
                delay = min(retry_after, self._max_retry_after)
            else:
                delay = jittered_backoff(attempt, self._backoff, self._max_backoff)
            budget = min(self._request_timeout, deadline - loop.time() - delay)
            if budget < min(self._request_timeout, MIN_RETRY_TIMEOUT):
                raise failure  # out of time: a retry this short would only add load
            logger.warning(
                "%s %s: %s; retrying in %.2fs (attempt %d of %d)",
                method,
                path,
                _summary(failure),
                delay,
                attempt + 1,
                self._attempts,
            )
            await asyncio.sleep(delay)

    async def watch(
        self, path: str, params: dict[str, str], idle_timeout: float
    ) -> AsyncGenerator[Obj, None]:
        """The events of one watch request, decoded, until the apiserver ends the stream.
        Not retried: whether to watch again or list again is the caller's to decide. Raises
        :class:`ApiError` when the apiserver refuses the watch, or the stream breaks or is
        silent for ``idle_timeout`` seconds. A 401 logs in again once, as `request` does."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=idle_timeout
        )
        logged_in_again = False
        while True:
            session = self._session or self._connect()
            try:
                async with session.get(
                    self._server + path, params=params, timeout=timeout
                ) as response:
                    if response.status == 200:
                        async for line in _lines(response.content):
                            yield _decode(200, line, 1)
                        return
                    if response.status != 401 or logged_in_again:
                        message = _message(await response.read())
                        raise ApiError(response.status, response.reason or "", message)
            except TimeoutError as error:
                raise ApiError(NO_ANSWER, TIMEOUT, _describe(error, idle_timeout)) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as error:
                raise ApiError(NO_ANSWER, CONNECTION_ERROR, _describe(error)) from None
            except aiohttp.ClientError as error:
                raise ApiError(NO_ANSWER, INVALID_RESPONSE, _describe(error)) from None
            logger.warning("apiserver answered 401 to a watch; logging in again")
            logged_in_again = True
            await self.close()

    async def _get_or_none(self, path: str) -> Obj | None:
        try:
            return await self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    # Custom resources: Signet's own and kopf's peering ------------------------------------
    async def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        return await self._get_or_none(_custom_path(GROUP, VERSION, PLURALS[kind], namespace, name))

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Obj) -> Obj:
        """Merge-patch ``status`` through the status subresource."""
        path = _custom_path(GROUP, VERSION, PLURALS[kind], namespace, name) + "/status"
        return await self.request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)

    async def get_peering(self, name: str, namespace: str | None) -> Obj | None:
        _, plural = _peering_kind(namespace)
        return await self._get_or_none(_custom_path("kopf.dev", "v1", plural, namespace, name))

    async def create_peering(self, name: str, namespace: str | None) -> bool:
        """Create kopf's peering object; False if it already exists."""
        kind, plural = _peering_kind(namespace)
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        try:
            await self.request("POST", _custom_path("kopf.dev", "v1", plural, namespace), body)
        except ApiError as error:
            if error.status != 409:
                raise
            return False
        return True

    # Secrets -----------------------------------------------------------------------------
    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none(_core_path("secrets", namespace, name))

    async def create_secret(self, namespace: str, body: Obj) -> Obj:
        return await self.request("POST", _core_path("secrets", namespace), body)

    async def replace_secret(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT with ``metadata.resourceVersion`` set: fails with 409 if someone else wrote."""
        return await self.request("PUT", _core_path("secrets", namespace, name), body)

    async def patch_secret(self, namespace: str, name: str, patch: Obj) -> Obj:
        path = _core_path("secrets", namespace, name)
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    # ConfigMaps (trust bundles) ----------------------------------------------------------
    async def apply_configmap(
        self, namespace: str, name: str, labels: dict[str, str], data: dict[str, str]
    ) -> None:
        """Create or update a ConfigMap to hold exactly ``data``; no write if unchanged."""
        path = _core_path("configmaps", namespace, name)
        current = await self._get_or_none(path)
        if current is None:
            metadata = {"name": name, "namespace": namespace, "labels": labels}
            try:
                body = {"metadata": metadata, "data": data}
                await self.request("POST", _core_path("configmaps", namespace), body)
                return
            except ApiError as error:
                if error.status != 409:
                    raise
                current = await self.request("GET", path)
        existing: dict[str, str] = current.get("data") or {}
        if existing == data and all(
            (current["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items()
        ):
            return
        # A merge patch keeps keys it does not name: stale ones are deleted with null.
        stale: dict[str, str | None] = {key: None for key in existing if key not in data}
        patch = {"metadata": {"labels": labels}, "data": {**stale, **data}}
        await self.request("PATCH", path, patch, content_type=MERGE_PATCH)

    # PodCertificateRequests and ClusterTrustBundles (certificates.k8s.io) ----------------
    async def get_pod_certificate_request(
        self, namespace: str, name: str, version: str = "v1"
    ) -> Obj | None:
        """None if there is no such request, or ``version`` is not served."""
        return await self._get_or_none(
            _custom_path(CERTIFICATES_GROUP, version, "podcertificaterequests", namespace, name)
        )

    async def update_pod_certificate_request_status(
        self, namespace: str, name: str, body: Obj
    ) -> Obj:
        """PUT the whole request to /status, ``metadata.resourceVersion`` included: the one
        write that answers it. 409 if it changed since; 422 once anyone has answered it."""
        path = _custom_path(CERTIFICATES_GROUP, "v1", "podcertificaterequests", namespace, name)
        return await self.request("PUT", path + "/status", body)

    async def get_certificate_signing_request(self, name: str) -> Obj | None:
        return await self._get_or_none(
            _custom_path(CERTIFICATES_GROUP, "v1", "certificatesigningrequests", None, name)
        )

    async def update_certificate_signing_request_status(self, name: str, body: Obj) -> Obj:
        """PUT the whole request to /status, ``metadata.resourceVersion`` included: the one
        write that answers it (status.certificate, or a Failed condition). 409 if it changed
        since. Setting status.certificate also takes ``sign`` on the request's signer."""
        path = _custom_path(CERTIFICATES_GROUP, "v1", "certificatesigningrequests", None, name)
        return await self.request("PUT", path + "/status", body)

    # cert-manager CertificateRequests (Signet as an external issuer) -------------------
    async def get_certificate_request(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none(
            _custom_path("cert-manager.io", "v1", "certificaterequests", namespace, name)
        )

    async def update_certificate_request_status(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT the whole request to /status, ``metadata.resourceVersion`` included: 409 if
        it changed since, so an answer never overwrites an approver's Denied."""
        path = _custom_path("cert-manager.io", "v1", "certificaterequests", namespace, name)
        return await self.request("PUT", path + "/status", body)

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether the apiserver serves ``plural`` in ``group_version`` (discovery)."""
        found = await self._get_or_none(f"/apis/{group_version}")
        return any(r.get("name") == plural for r in (found or {}).get("resources") or [])

    async def list_cluster_trust_bundles(self, label_selector: str) -> list[Obj]:
        """One listing: a cluster holds one signer-linked bundle per opted-in issuer."""
        collection = _custom_path(CERTIFICATES_GROUP, "v1", "clustertrustbundles", None)
        result = await self.request("GET", collection, params={"labelSelector": label_selector})
        items: list[Obj] = result.get("items") or []
        return items

    async def delete_cluster_trust_bundle(self, name: str, signer_name: str) -> bool:
        """Delete the bundle if it is still linked to ``signer_name``; False if it was not
        there (or belongs to another signer, which is not ours to delete)."""
        path = (
            f"{_custom_path(CERTIFICATES_GROUP, 'v1', 'clustertrustbundles', None)}/{quote(name)}"
        )
        current = await self._get_or_none(path)
        if current is None or (current.get("spec") or {}).get("signerName") != signer_name:
            return False
        precondition = {"uid": current["metadata"]["uid"]}
        try:
            await self.request("DELETE", path, {"preconditions": precondition})
        except ApiError as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def apply_cluster_trust_bundle(
        self, name: str, labels: dict[str, str], signer_name: str, trust_bundle: str
    ) -> bool:
        """Create or update a signer-linked ClusterTrustBundle; False when it already said
        exactly this (no write)."""
        collection = _custom_path(CERTIFICATES_GROUP, "v1", "clustertrustbundles", None)
        path = f"{collection}/{quote(name)}"
        spec = {"signerName": signer_name, "trustBundle": trust_bundle}
        current = await self._get_or_none(path)
        if current is None:
            body = {
                "apiVersion": f"{CERTIFICATES_GROUP}/v1",
                "kind": "ClusterTrustBundle",
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
            }
            try:
                await self.request("POST", collection, body)
                return True
            except ApiError as error:
                if error.status != 409:
                    raise
                current = await self.request("GET", path)
        current_labels = current["metadata"].get("labels") or {}
        if current.get("spec") == spec and all(
            current_labels.get(k) == v for k, v in labels.items()
        ):
            return False
        patch = {"metadata": {"labels": labels}, "spec": spec}
        await self.request("PATCH", path, patch, content_type=MERGE_PATCH)
        return True

    # Namespaces and Events ---------------------------------------------------------------
    async def get_namespace(self, name: str) -> Obj | None:
        return await self._get_or_none(f"/api/v1/namespaces/{quote(name)}")

    async def create_event(self, namespace: str, body: Obj) -> None:
        await self.request("POST", _core_path("events", namespace), body)

    async def patch_event(self, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch an Event (a repeat: ``count``, ``lastTimestamp``). An Event that is
        gone (they expire an hour after their last write, by default) raises 404."""
        path = _core_path("events", namespace, name)
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)


def _peering_kind(namespace: str | None) -> tuple[str, str]:
    """kopf's peering object: namespaced for a namespaced operator, else cluster-wide."""
    if namespace:
        return "KopfPeering", "kopfpeerings"
    return "ClusterKopfPeering", "clusterkopfpeerings"


def jittered_backoff(failures: int, first: float, most: float) -> float:
    """The wait after ``failures`` failures in a row: doubling from ``first`` up to ``most``,
    then a random point in its upper half, so that many waiters do not come back in step."""
    ceiling = min(most, first * 2 ** (failures - 1))
    return random.uniform(ceiling / 2, ceiling)


def collection_path(group: str, version: str, plural: str, namespace: str | None) -> str:
    """The path of a kind's objects in ``namespace`` (None: in all); "" is the core group."""
    if group:
        return _custom_path(group, version, plural, namespace)
    return _path(f"/api/{version}", plural, namespace, None)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A stream's lines, however long: aiohttp's own line reader refuses lines over
    128 KiB, and one Secret in a watch event can be longer."""
    rest = b""
    async for chunk in content.iter_any():
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield line
    if rest.strip():
        yield rest


def _core_path(plural: str, namespace: str | None, name: str | None = None) -> str:
    return _path("/api/v1", plural, namespace, name)


def _custom_path(
    group: str, version: str, plural: str, namespace: str | None, name: str | None = None
) -> str:
    return _path(f"/apis/{group}/{version}", plural, namespace, name)


def _path(root: str, plural: str, namespace: str | None, name: str | None) -> str:
    scope = f"/namespaces/{quote(namespace)}" if namespace else ""
    return f"{root}{scope}/{plural}" + (f"/{quote(name)}" if name else "")


def _message(payload: bytes) -> str:
    """The Status message of an error answer, cut short; the raw text if it is not one."""
    try:
        message = json.loads(payload).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or payload[:200].decode("utf-8", "replace")).strip()[:512]


def _decode(status: int, payload: bytes, attempts: int) -> Obj:
    try:
        decoded = json.loads(payload) if payload else {}
    except ValueError:
        raise ApiError(
            status, INVALID_RESPONSE, "the answer is not JSON", attempts=attempts
        ) from None
    if not isinstance(decoded, dict):
        raise ApiError(status, INVALID_RESPONSE, "the answer is not an object", attempts=attempts)
    return decoded


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, as the apiserver sends it; None if absent or a date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return None if math.isnan(seconds) else max(seconds, 0.0)


def _describe(error: BaseException, timeout: float | None = None) -> str:
    """What went wrong, for a message: the exception's kind and text (addresses, errno),
    never anything from the request."""
    text = str(error).strip()
    if timeout is not None and not text:
        text = f"no answer within {timeout:.1f}s"
    return f"{type(error).__name__}: {text}"[:512] if text else type(error).__name__


def _summary(error: ApiError) -> str:
    if error.status == NO_ANSWER:
        return f"{error.reason} ({error.message})"
    return f"HTTP {error.status} {error.reason}"

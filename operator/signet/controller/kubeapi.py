"""The few Kubernetes API calls the controller makes, as plain-dict coroutines.

kopf owns the watches; this owns the writes. It speaks to the apiserver the way kopf does:
aiohttp on the operator's event loop, with credentials from kopf's own login functions
(the projected ServiceAccount token in a pod, else the kubeconfig). The official
``kubernetes`` client is not used here on purpose: it is synchronous (every call a thread
hop), turns responses into generated model objects, and importing it costs the operator
about 45 MiB of its 200 MiB budget (see ``bench/README.md``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
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


class ApiError(Exception):
    """A non-2xx answer. ``message`` is the apiserver's own explanation (its Status
    message), never the request body, so it is safe to put in a condition or an Event."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
    proxy); what kopf builds for itself, shared here so both sides connect alike."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": "signet"},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        timeout=timeout or aiohttp.ClientTimeout(total=None),
        trace_configs=trace_configs,
    )


class KubeApi:
    def __init__(
        self,
        login: Login = login_from_environment,
        *,
        connections: int = 16,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._login = login
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One call, decoded. A 401 logs in again once: projected tokens rotate."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        for attempt in (1, 2):
            session = self._session or self._connect()
            async with session.request(
                method,
                self._server + path,
                data=data,
                params=params,
                headers={"Content-Type": content_type} if data is not None else None,
            ) as response:
                payload = await response.read()
                if response.status == 401 and attempt == 1:
                    logger.warning("apiserver answered 401; logging in again")
                    await self.close()
                    continue
                if response.status >= 400:
                    raise ApiError(response.status, response.reason or "", _message(payload))
                return json.loads(payload) if payload else {}
        raise AssertionError("unreachable: the second attempt returns or raises")

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

    async def list_secrets(
        self, label_selector: str, namespace: str | None = None, page: int = 200
    ) -> AsyncIterator[list[Obj]]:
        """Every Secret matching the selector (in one namespace, or all), a page at a time:
        10,000 Secrets with their keys parsed at once would be the operator's memory peak."""
        params = {"labelSelector": label_selector, "limit": str(page)}
        while True:
            result = await self.request("GET", _core_path("secrets", namespace), params=params)
            yield result.get("items") or []
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return
            params = {**params, "continue": token}

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

    # Namespaces and Events ---------------------------------------------------------------
    async def get_namespace(self, name: str) -> Obj | None:
        return await self._get_or_none(f"/api/v1/namespaces/{quote(name)}")

    async def create_event(self, namespace: str, body: Obj) -> None:
        await self.request("POST", _core_path("events", namespace), body)


def _peering_kind(namespace: str | None) -> tuple[str, str]:
    """kopf's peering object: namespaced for a namespaced operator, else cluster-wide."""
    if namespace:
        return "KopfPeering", "kopfpeerings"
    return "ClusterKopfPeering", "clusterkopfpeerings"


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

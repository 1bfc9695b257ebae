"""The few Kubernetes API calls the controller makes, as plain-dict coroutines.

The official client is synchronous and turns every response into model objects, which is
most of its cost. Calls here run on a dedicated thread pool sized to the connection pool,
ask for the raw response (``_preload_content=False``) and decode JSON once. kopf owns the
watches; this owns the writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from signet.api import GROUP, VERSION

Obj = dict[str, Any]
PLURALS = {"Certificate": "certificates", "Issuer": "issuers", "ClusterIssuer": "clusterissuers"}


class KubeApi:
    def __init__(self, api_client: kubernetes.client.ApiClient, *, threads: int = 16) -> None:
        self.client = api_client
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kubeapi")

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, *, threads: int = 16) -> KubeApi:
        """In-cluster config when running in a pod, else the kubeconfig (or $KUBECONFIG)."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
        configuration.connection_pool_maxsize = threads
        return cls(kubernetes.client.ApiClient(configuration), threads=threads)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, _preload_content=False, **kwargs)
        response = await loop.run_in_executor(self._pool, call)
        try:
            data = response.data
        finally:
            response.release_conn()  # unread-to-the-pool connections are otherwise discarded
        return json.loads(data) if data else {}

    async def _get_or_none(self, fn: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            return await self._call(fn, *args)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    # Signet's own resources -------------------------------------------------------------
    async def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        if namespace:
            return await self._get_or_none(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURALS[kind],
                name,
            )
        return await self._get_or_none(
            self.custom.get_cluster_custom_object, GROUP, VERSION, PLURALS[kind], name
        )

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Obj) -> Obj:
        """Merge-patch ``status`` through the status subresource."""
        body = {"status": status}
        if namespace:
            return await self._call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                PLURALS[kind],
                name,
                body,
            )
        return await self._call(
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            PLURALS[kind],
            name,
            body,
        )

    # Secrets -----------------------------------------------------------------------------
    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        return await self._get_or_none(self.core.read_namespaced_secret, name, namespace)

    async def create_secret(self, namespace: str, body: Obj) -> Obj:
        return await self._call(self.core.create_namespaced_secret, namespace, body)

    async def replace_secret(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUT with ``metadata.resourceVersion`` set: fails with 409 if someone else wrote."""
        return await self._call(self.core.replace_namespaced_secret, name, namespace, body)

    async def patch_secret(self, namespace: str, name: str, patch: Obj) -> Obj:
        return await self._call(self.core.patch_namespaced_secret, name, namespace, patch)

    async def list_secrets(
        self, label_selector: str, namespace: str | None = None, page: int = 500
    ) -> list[Obj]:
        """Every Secret matching the selector (in one namespace, or all), paginated so a
        large cluster costs bounded memory per page."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": page}
            if token:
                kwargs["_continue"] = token
            if namespace:
                result = await self._call(self.core.list_namespaced_secret, namespace, **kwargs)
            else:
                result = await self._call(self.core.list_secret_for_all_namespaces, **kwargs)
            items.extend(result.get("items") or [])
            token = (result.get("metadata") or {}).get("continue")
            if not token:
                return items

    # ConfigMaps (trust bundles) ----------------------------------------------------------
    async def apply_configmap(
        self, namespace: str, name: str, labels: dict[str, str], data: dict[str, str]
    ) -> None:
        """Create or update a ConfigMap to hold exactly ``data``; no write if unchanged."""
        current = await self._get_or_none(self.core.read_namespaced_config_map, name, namespace)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": data,
        }
        if current is None:
            try:
                await self._call(self.core.create_namespaced_config_map, namespace, body)
                return
            except ApiException as error:
                if error.status != 409:
                    raise
                current = await self._call(self.core.read_namespaced_config_map, name, namespace)
        if current.get("data") == data and all(
            (current["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items()
        ):
            return
        await self._call(
            self.core.patch_namespaced_config_map,
            name,
            namespace,
            {"metadata": {"labels": labels}, "data": data},
        )

    # kopf peering ------------------------------------------------------------------------
    async def get_peering(self, name: str, namespace: str | None) -> Obj | None:
        if namespace:
            return await self._get_or_none(
                self.custom.get_namespaced_custom_object,
                "kopf.dev",
                "v1",
                namespace,
                "kopfpeerings",
                name,
            )
        return await self._get_or_none(
            self.custom.get_cluster_custom_object, "kopf.dev", "v1", "clusterkopfpeerings", name
        )

    # Namespaces and Events ---------------------------------------------------------------
    async def get_namespace(self, name: str) -> Obj | None:
        return await self._get_or_none(self.core.read_namespace, name)

    async def create_event(self, namespace: str, body: Obj) -> None:
        await self._call(self.core.create_namespaced_event, namespace, body)

"""The operator's own API client (aiohttp + kopf's login) against the real apiserver."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import kopf
import pytest

from signet.controller.kubeapi import ApiError, KubeApi, login_from_environment
from signet.secrets import layout
from tests.kube import Kube

pytestmark = pytest.mark.cluster
T = TypeVar("T")


@pytest.fixture
def admin(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    info = login_from_environment()
    assert info is not None
    return info


def run(use: Callable[[KubeApi], Awaitable[T]], login: Callable[[], Any]) -> T:
    async def main() -> T:
        api = KubeApi(login)
        try:
            return await use(api)
        finally:
            await api.close()

    return asyncio.run(main())


def test_logs_in_again_once_after_401(admin: kopf.ConnectionInfo) -> None:
    """Projected ServiceAccount tokens rotate: a 401 fetches credentials anew, once."""
    expired = dataclasses.replace(
        admin, certificate_data=None, private_key_data=None, token="rotated-away"
    )
    logins: Iterator[kopf.ConnectionInfo] = iter([expired, admin])
    namespace = run(lambda api: api.get_namespace("default"), lambda: next(logins))
    assert namespace is not None and namespace["metadata"]["name"] == "default"
    assert next(logins, None) is None  # exactly two logins

    always_expired = lambda: expired  # noqa: E731
    with pytest.raises(ApiError) as raised:
        run(lambda api: api.get_namespace("default"), always_expired)
    assert raised.value.status == 401


def test_errors_carry_the_apiserver_message_not_the_request(
    admin: kopf.ConnectionInfo, namespace: str
) -> None:
    secret = {
        "metadata": {"name": "Not_A_Valid_Name"},
        "type": "Opaque",
        "stringData": {"tls.key": "KEY-MATERIAL-MUST-NOT-ECHO"},
    }
    with pytest.raises(ApiError) as raised:
        run(lambda api: api.create_secret(namespace, secret), lambda: admin)
    error = raised.value
    assert error.status == 422
    assert "Invalid value" in error.message and "Not_A_Valid_Name" in error.message
    assert "KEY-MATERIAL" not in str(error)
    assert run(lambda api: api.get_secret(namespace, "absent"), lambda: admin) is None


def test_lists_secrets_a_page_at_a_time(admin: kopf.ConnectionInfo, namespace: str) -> None:
    labels = {layout.MANAGED_BY_LABEL: layout.MANAGED_BY}

    async def use(api: KubeApi) -> list[list[str]]:
        for i in range(5):
            await api.create_secret(namespace, {"metadata": {"name": f"s{i}", "labels": labels}})
        await api.create_secret(namespace, {"metadata": {"name": "unlabelled"}})
        return [
            [item["metadata"]["name"] for item in page]
            async for page in api.list_secrets(layout.SELECTOR, namespace, page=2)
        ]

    assert run(use, lambda: admin) == [["s0", "s1"], ["s2", "s3"], ["s4"]]


def test_apply_configmap_holds_exactly_the_data(admin: kopf.ConnectionInfo, namespace: str) -> None:
    async def use(api: KubeApi) -> dict[str, Any] | None:
        labels = {"signet.dev/trust-bundle": "true"}
        await api.apply_configmap(namespace, "bundle", labels, {"a.pem": "A", "b.pem": "B"})
        await api.apply_configmap(namespace, "bundle", labels, {"b.pem": "B2", "c.pem": "C"})
        return await api.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/bundle")

    configmap = run(use, lambda: admin)
    assert configmap is not None
    assert configmap["data"] == {"b.pem": "B2", "c.pem": "C"}
    assert configmap["metadata"]["labels"] == {"signet.dev/trust-bundle": "true"}


def test_operator_process_never_imports_the_kubernetes_client() -> None:
    """kopf imports it when installed; `signet run` blocks it (~45 MiB) before kopf loads."""
    probe = (
        "import sys\n"
        "from signet.controller.main import keep_kubernetes_client_out\n"
        "keep_kubernetes_client_out()\n"
        "import kopf, signet.controller.handlers, signet.controller.runtime\n"
        "assert sys.modules['kubernetes'] is None, 'kubernetes was imported'\n"
        "assert not [m for m in sys.modules if m.startswith('kubernetes.')]\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)

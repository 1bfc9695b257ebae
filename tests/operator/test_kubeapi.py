"""The operator's own API client (aiohttp + kopf's login) against the real apiserver.

The retry tests put the fault proxy (``tests.faultproxy``) between the client and the
apiserver: every answer that is not injected is the apiserver's own, and what a test
checks is the state the apiserver reached, not only what the client said.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kopf
import kubernetes
import pytest

from signet.controller.kubeapi import ApiError, KubeApi, login_from_environment, open_session
from tests.faultproxy import FaultProxy
from tests.kube import Kube, eventually

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def run(use: Callable[[KubeApi], Awaitable[T]], login: Callable[[], Any], **options: Any) -> T:
    async def main() -> T:
        api = KubeApi(login, **options)
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


# Retries, through the fault proxy -------------------------------------------------------
QUICK = {"backoff": 0.05, "max_backoff": 0.4}
"""Short backoffs: the tests are about what is retried, not about how long it waits."""
SECRETS = "/api/v1/namespaces/*/secrets"
DEFAULT = "/api/v1/namespaces/default"


def _secret(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "type": "Opaque", "stringData": {"k": "v"}}


def _secret_exists(kube: Kube, namespace: str, name: str) -> bool:
    try:
        kube.core.read_namespaced_secret(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_a_throttled_call_waits_as_long_as_retry_after_says(
    apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    throttled = apiserver_proxy.fail("GET", DEFAULT, status=429, retry_after=1, times=1)
    start = time.monotonic()
    found = run(lambda api: api.get_namespace("default"), lambda: proxied, **QUICK)
    elapsed = time.monotonic() - start
    assert found is not None and found["metadata"]["name"] == "default"
    assert throttled.fired == 1
    assert apiserver_proxy.count("GET", DEFAULT) == 2
    assert elapsed >= 1.0  # the backoff alone would have retried well before


def test_a_write_answered_503_three_times_lands_on_the_fourth(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    unavailable = apiserver_proxy.fail("POST", SECRETS, status=503, times=3)
    created = run(lambda api: api.create_secret(namespace, _secret("s")), lambda: proxied, **QUICK)
    assert created["metadata"]["name"] == "s"
    assert unavailable.fired == 3
    assert apiserver_proxy.count("POST", SECRETS) == 4
    assert _secret_exists(kube, namespace, "s")


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_server_errors_are_retried(
    status: int, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    apiserver_proxy.fail("GET", DEFAULT, status=status, times=1)
    found = run(lambda api: api.get_namespace("default"), lambda: proxied, **QUICK)
    assert found is not None
    assert [seen.status for seen in apiserver_proxy.requests("GET", DEFAULT)] == [status, 200]


def test_a_connection_reset_before_the_write_is_retried_and_the_write_lands(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    reset = apiserver_proxy.reset("POST", SECRETS, times=1)
    created = run(lambda api: api.create_secret(namespace, _secret("s")), lambda: proxied, **QUICK)
    assert created["metadata"]["name"] == "s"
    assert reset.fired == 1
    assert [seen.status for seen in apiserver_proxy.requests("POST", SECRETS)] == [None, 201]
    assert _secret_exists(kube, namespace, "s")


def test_a_create_whose_answer_was_lost_comes_back_as_409_already_exists(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    """The retried POST finds its own Secret: callers treat 409 as "written meanwhile"."""
    apiserver_proxy.reset("POST", SECRETS, times=1, forwarded=True)
    with pytest.raises(ApiError) as raised:
        run(lambda api: api.create_secret(namespace, _secret("s")), lambda: proxied, **QUICK)
    assert (raised.value.status, raised.value.transient, raised.value.attempts) == (409, False, 2)
    assert _secret_exists(kube, namespace, "s")


def test_a_hung_request_is_given_up_after_the_timeout_and_retried(
    apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    apiserver_proxy.delay("GET", DEFAULT, seconds=math.inf, times=1)
    start = time.monotonic()
    found = run(lambda api: api.get_namespace("default"), lambda: proxied, timeout=2, **QUICK)
    assert found is not None and found["metadata"]["name"] == "default"
    assert time.monotonic() - start >= 2
    assert [seen.status for seen in apiserver_proxy.requests("GET", DEFAULT)] == [None, 200]


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [("503", 503, "Service Unavailable"), ("reset", 0, "ConnectionError"), ("hang", 0, "Timeout")],
)
def test_when_retries_run_out_the_error_says_it_is_transient(
    fault: str,
    status: int,
    reason: str,
    kube: Kube,
    namespace: str,
    apiserver_proxy: FaultProxy,
    proxied: kopf.ConnectionInfo,
) -> None:
    if fault == "503":
        apiserver_proxy.fail("POST", SECRETS, status=503, times=None)
    elif fault == "reset":
        apiserver_proxy.reset("POST", SECRETS, times=None)
    else:
        apiserver_proxy.delay("POST", SECRETS, seconds=math.inf, times=None)
    with pytest.raises(ApiError) as raised:  # and no aiohttp or asyncio exception
        run(
            lambda api: api.create_secret(namespace, _secret("s")),
            lambda: proxied,
            attempts=3,
            timeout=1,
            **QUICK,
        )
    error = raised.value
    assert (error.status, error.reason, error.transient, error.attempts) == (
        status,
        reason,
        True,
        3,
    )
    assert apiserver_proxy.count("POST", SECRETS) == 3
    assert not _secret_exists(kube, namespace, "s")


def test_retries_stop_at_the_deadline(
    apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    apiserver_proxy.fail("GET", DEFAULT, status=503, times=None)
    start = time.monotonic()
    with pytest.raises(ApiError) as raised:
        run(
            lambda api: api.get_namespace("default"),
            lambda: proxied,
            attempts=1000,
            retry_deadline=2,
            backoff=0.2,
            max_backoff=0.2,
        )
    elapsed = time.monotonic() - start
    assert raised.value.status == 503 and raised.value.transient
    assert 1 < raised.value.attempts < 1000
    assert apiserver_proxy.count("GET", DEFAULT) == raised.value.attempts
    assert elapsed < 2 + 5  # the deadline, and a slow last answer on a busy machine


def test_answers_that_a_retry_cannot_change_are_not_retried(
    namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    invalid = _secret("Not_A_Valid_Name")

    async def use(api: KubeApi) -> list[int]:
        statuses = []
        assert await api.get_secret(namespace, "absent") is None  # 404
        await api.create_secret(namespace, _secret("s"))
        for body in (_secret("s"), invalid):  # 409, then 422
            try:
                await api.create_secret(namespace, body)
            except ApiError as error:
                assert not error.transient and error.attempts == 1
                statuses.append(error.status)
        return statuses

    assert run(use, lambda: proxied, **QUICK) == [409, 422]
    assert [seen.status for seen in apiserver_proxy.requests()] == [404, 201, 409, 422]


# The proxy itself --------------------------------------------------------------------------
def test_the_proxy_keeps_each_client_s_identity(
    kube: Kube,
    namespace: str,
    apiserver_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A ServiceAccount token stays that ServiceAccount (RBAC denies it what it denies
    without the proxy); the admin certificate stays the admin."""
    account = kubernetes.client.V1ServiceAccount(
        metadata=kubernetes.client.V1ObjectMeta(name="nobody")
    )
    kube.core.create_namespaced_service_account(namespace, account)
    token_kubeconfig = kube.service_account_kubeconfig(namespace, "nobody", tmp_path)
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    reviews = "/apis/authentication.k8s.io/v1/selfsubjectreviews"

    def who(kubeconfig: Path) -> tuple[str, int]:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        info = login_from_environment()

        async def use(api: KubeApi) -> tuple[str, int]:
            user = (await api.request("POST", reviews, review))["status"]["userInfo"]
            try:
                await api.get_secret(namespace, "absent")
            except ApiError as error:
                return user["username"], error.status
            return user["username"], 404

        return run(use, lambda: info)

    assert who(apiserver_proxy.kubeconfig_for(token_kubeconfig)) == (
        f"system:serviceaccount:{namespace}:nobody",
        403,
    )
    assert who(apiserver_proxy.kubeconfig) == ("signet-admin", 404)
    assert [seen.identity for seen in apiserver_proxy.requests()] == [
        "token",
        "token",
        "admin-certificate",
        "admin-certificate",
    ]


def test_watches_stream_through_the_proxy_and_can_be_cut(
    kube: Kube, namespace: str, apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    """A watch as kopf opens one (aiohttp, same credentials): each event arrives as it
    happens, and ``cut_streams`` ends it the way a lost connection would."""
    configmaps = f"{proxied.server}/api/v1/namespaces/{namespace}/configmaps"

    async def watch() -> tuple[dict[str, Any], float]:
        async with open_session(proxied) as session:
            async with session.get(configmaps) as listed:
                version = (await listed.json())["metadata"]["resourceVersion"]
            params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "120"}
            async with session.get(configmaps, params=params) as response:
                assert response.status == 200
                body = kubernetes.client.V1ConfigMap(
                    metadata=kubernetes.client.V1ObjectMeta(name="first")
                )
                await asyncio.to_thread(kube.core.create_namespaced_config_map, namespace, body)
                start = time.monotonic()
                event = json.loads(await response.content.readline())
                waited = time.monotonic() - start
                assert await asyncio.to_thread(apiserver_proxy.cut_streams) == 1
                with pytest.raises(aiohttp.ClientError):
                    await response.content.read()
        return event, waited

    event, waited = asyncio.run(watch())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "first")
    # A proxy that buffered the answer would hand it over only when the server ends it.
    assert waited < 60
    assert apiserver_proxy.count("GET", watch=True) == 1


def test_a_paused_proxy_holds_requests_until_it_resumes(
    apiserver_proxy: FaultProxy, proxied: kopf.ConnectionInfo
) -> None:
    apiserver_proxy.pause()
    answers: list[Any] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            run(lambda api: api.get_namespace("default"), lambda: proxied)
        )
    )
    caller.start()
    eventually(lambda: apiserver_proxy.count("GET", DEFAULT) == 1, what="the request held")
    assert answers == [] and caller.is_alive()
    apiserver_proxy.resume()
    caller.join(30)
    assert answers and answers[0]["metadata"]["name"] == "default"
    assert apiserver_proxy.count("GET", DEFAULT) == 1


def test_asks_for_uncompressed_listings(
    kube: Kube, namespace: str, admin: kopf.ConnectionInfo
) -> None:
    """The apiserver gzips an answer over 128 KiB for any client that accepts it; Signet's
    sessions (kopf's watches and listings, and its own calls) do not accept it. A plain
    aiohttp session, which does, is the control: the same listing comes back gzipped."""
    filler = "x" * 60_000
    for i in range(4):
        body = kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name=f"big-{i}"), data={"filler": filler}
        )
        kube.core.create_namespaced_config_map(namespace, body)
    configmaps = f"{admin.server}/api/v1/namespaces/{namespace}/configmaps"

    async def encodings() -> tuple[str | None, str | None, int]:
        async with open_session(admin) as signet, signet.get(configmaps) as response:
            ours = response.headers.get("Content-Encoding")
            items = len((await response.json())["items"])
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=admin.as_ssl_context()),
                headers=admin.as_http_headers(),
            ) as plain,
            plain.get(configmaps) as response,
        ):
            theirs = response.headers.get("Content-Encoding")
        return ours, theirs, items

    ours, theirs, items = asyncio.run(encodings())
    assert items >= 4
    assert theirs == "gzip"
    assert ours is None

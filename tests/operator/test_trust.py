"""Trust bundle publishing against the real apiserver: one write per namespace, however
many Certificates of an issuer arrive in it at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signet.controller.kubeapi import KubeApi, Obj, login_from_environment
from signet.controller.trust import TrustPublisher, configmap_name
from signet.issuance import TrustSet
from tests.kube import Kube

pytestmark = pytest.mark.cluster

SSH_CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ca"


class CountingApi(KubeApi):
    """The real client, noting each request it sends."""

    def __init__(self) -> None:
        super().__init__(login_from_environment)
        self.sent: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, body: Obj | None = None, **kw: Any) -> Obj:
        self.sent.append((method, path))
        return await super().request(method, path, body, **kw)


def test_a_namespace_burst_publishes_its_bundle_once(
    kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    # Only the SSH CA line goes into the bundle (an SSH-only issuer).
    material = TrustSet(ssh_ca_lines=(SSH_CA,))
    issuer = ("Issuer", namespace, "ca")

    async def burst() -> list[tuple[str, str]]:
        api = CountingApi()
        try:
            publisher = TrustPublisher(api)
            await asyncio.gather(
                *(publisher.publish(issuer, material, namespace) for _ in range(20))
            )
            assert publisher.published(issuer, material, namespace)
            await publisher.publish(issuer, material, namespace)
            return api.sent
        finally:
            await api.close()

    sent = asyncio.run(burst())
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    assert sent == [("GET", f"{path}/{configmap_name(issuer)}"), ("POST", path)]
    configmap = kube.core.read_namespaced_config_map(configmap_name(issuer), namespace)
    assert configmap.data == {
        "ssh-ca.pub": SSH_CA + "\n",
        "ssh_known_hosts": f"@cert-authority * {SSH_CA}\n",
    }

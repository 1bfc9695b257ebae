"""A handle on the cluster under test, shared by every cluster test.

The suite runs against the local control plane by default, or against any cluster
``SIGNET_TEST_KUBECONFIG`` points at (kind, for people with Docker): same tests, same
fixtures, nothing local-only in between.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from signet_dev import LocalControlPlane, kubeconfig, tools_bin
from signet_dev.kube import CHECKOUT, KubeClient, kubectl_binary
from signet_dev.pods import wait_for

ROOT = CHECKOUT


class Kube(KubeClient):
    """The shared client, failing as tests fail, with what only tests need."""

    failure = AssertionError

    def __init__(self, kubeconfig: Path, plane: LocalControlPlane | None) -> None:
        super().__init__(kubeconfig)
        self.plane = plane

    def service_account_kubeconfig(self, namespace: str, name: str, folder: Path) -> Path:
        """A kubeconfig holding a TokenRequest token of the ServiceAccount: what a pod
        running as it would present."""
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = self.core.create_namespaced_service_account_token(name, namespace, request)
        return kubeconfig.write_for_token(
            folder / f"{namespace}-{name}.kubeconfig",
            like=self.kubeconfig,
            token=token.status.token,
            user_name=f"system:serviceaccount:{namespace}:{name}",
        )


def eventually(
    check: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
    errors: tuple[type[BaseException], ...] = (AssertionError, kubernetes.client.ApiException),
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value or error.
    ``errors`` are the exceptions that count as "not yet" rather than failures. The one
    polling loop of the test bed (`signet_dev.pods.wait_for`), failing as a test fails."""
    return wait_for(
        check,
        timeout=timeout,
        what=f"{what or check}",
        failure=AssertionError,
        interval=interval,
        errors=errors,
    )


def wait_event(
    kube: Kube,
    namespace: str,
    name: str,
    reason: str,
    *,
    type: str | None = None,
    contains: str = "",
    timeout: float = 30.0,
) -> Any:
    """The first Event on ``name`` with this reason (and type, and text in its message).
    Signet posts Events after the status they describe, one at a time: a test that has
    seen the status must still wait for the Event."""

    def find() -> Any:
        events = kube.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return next(
            (
                e
                for e in events.items
                if e.reason == reason and type in (None, e.type) and contains in (e.message or "")
            ),
            None,
        )

    return eventually(find, timeout=timeout, what=f"{reason} Event on {namespace}/{name}")


__all__ = ["ROOT", "Kube", "eventually", "kubectl_binary", "tools_bin", "wait_event"]

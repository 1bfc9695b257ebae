"""A handle on the cluster under test, shared by every cluster test.

The suite runs against the local control plane by default, or against any cluster
``SIGNET_TEST_KUBECONFIG`` points at (kind, for people with Docker): same tests, same
fixtures, nothing local-only in between.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from signet_dev import LocalControlPlane, kubeconfig, tools_bin

ROOT = Path(__file__).resolve().parent.parent


def kubectl_binary() -> str:
    built = ROOT / ".tools" / "bin" / "kubectl"
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make tools`")
    return found


@dataclass
class Kube:
    kubeconfig: Path
    plane: LocalControlPlane | None

    def __post_init__(self) -> None:
        self.api = kubernetes.config.new_client_from_config(str(self.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig_path: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; on failure the error carries its stderr."""
        command = [kubectl_binary(), f"--kubeconfig={kubeconfig_path or self.kubeconfig}", *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(
        self, manifest: dict[str, Any] | str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

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
    ``errors`` are the exceptions that count as "not yet" rather than failures."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except errors as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or check}: {last!r}"
            )
        time.sleep(interval)


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

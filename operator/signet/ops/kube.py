"""Connect to the cluster the way kubectl does: --kubeconfig, $KUBECONFIG, ~/.kube/config,
then in-cluster; the namespace defaults to the current context's.

Kept apart from the commands so each command is a plain function of an ``ApiClient``,
which is what the tests drive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ToolError(Exception):
    """A failure worth one line on stderr and exit code 1, not a traceback."""


@dataclass
class Cluster:
    """An API client plus the namespace commands use when ``-n`` is not given."""

    api: Any
    default_namespace: str

    @property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api)


def _kubeconfig_path(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("KUBECONFIG")
    if env:
        return env.split(os.pathsep)[0]
    home = Path.home() / ".kube" / "config"
    return str(home) if home.exists() else None


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """A client for ``kubeconfig`` (or the usual fallbacks); raises ToolError if none works."""
    path = _kubeconfig_path(kubeconfig)
    if path is not None:
        try:
            api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context
            )
            contexts, active = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=path
            )
        except (OSError, kubernetes.config.ConfigException) as error:
            raise ToolError(f"cannot load kubeconfig {path}: {error}") from None
        chosen = active
        if context:
            chosen = next((c for c in contexts if c.get("name") == context), active)
        namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        return Cluster(api, namespace)
    try:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException:
        raise ToolError(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG or run inside a cluster"
        ) from None
    namespace = (
        IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default"
    )
    return Cluster(kubernetes.client.ApiClient(configuration), namespace)


def api_error(error: Any, what: str) -> ToolError:
    """Turn an ApiException into one readable line (404 on a CRD means it is not installed)."""
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", "") or ""
    if status == 404:
        return ToolError(f"{what}: not found (are Signet's CRDs installed?)")
    if status == 403:
        return ToolError(f"{what}: forbidden by RBAC ({reason})")
    return ToolError(f"{what}: HTTP {status} {reason}".rstrip())

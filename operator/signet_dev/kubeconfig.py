"""Kubeconfig files for the local control plane: the admin one, and one per ServiceAccount.

A ServiceAccount kubeconfig carries a token from the TokenRequest API, which is exactly the
credential a pod of the Helm chart would get; running the operator with it proves the
chart's RBAC rather than the admin's.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def write(path: Path, *, server: str, ca_data: str, user: dict[str, Any], user_name: str) -> Path:
    """Write a single-context kubeconfig with everything embedded (no relative paths).

    ``ca_data`` is the base64 PEM bundle the server's certificate chains to, or empty for
    a server with a publicly trusted certificate.
    """
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "signet", "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "signet", "context": {"cluster": "signet", "user": user_name}}],
        "current-context": "signet",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def file_data(path: Path) -> str:
    """A file's bytes as the base64 text kubeconfig ``*-data`` fields hold."""
    return base64.b64encode(path.read_bytes()).decode()


def client_certificate_user(cert: Path, key: Path) -> dict[str, Any]:
    return {"client-certificate-data": file_data(cert), "client-key-data": file_data(key)}


def token_user(token: str) -> dict[str, Any]:
    return {"token": token}


def read_server_and_ca(kubeconfig: Path) -> tuple[str, str]:
    """The server URL and base64 CA of a kubeconfig's current context, so a ServiceAccount
    kubeconfig can be derived from any cluster (local or one the user points us at)."""
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    return cluster["server"], cluster.get("certificate-authority-data", "")


def write_for_token(path: Path, *, like: Path, token: str, user_name: str) -> Path:
    """A kubeconfig that talks to the same server as ``like`` but authenticates with a
    bearer token."""
    server, ca_data = read_server_and_ca(like)
    return write(path, server=server, ca_data=ca_data, user=token_user(token), user_name=user_name)

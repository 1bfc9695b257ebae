"""Fixtures of the operator's client tests (its API client and its informer)."""

from __future__ import annotations

from pathlib import Path

import kopf
import pytest

from signet.controller.kubeapi import login_from_environment
from tests.faultproxy import FaultProxy
from tests.kube import Kube


def _login(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    """Credentials as the operator finds them, from ``kubeconfig``."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = login_from_environment()
    assert info is not None
    return info


@pytest.fixture
def admin(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    """The admin's credentials, straight to the apiserver."""
    return _login(kube.kubeconfig, monkeypatch)


@pytest.fixture
def proxied(apiserver_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    """The admin's credentials, with the fault proxy as the server."""
    return _login(apiserver_proxy.kubeconfig, monkeypatch)

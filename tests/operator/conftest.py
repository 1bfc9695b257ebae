"""Fixtures of the operator's client tests (its API client and its informer)."""

from __future__ import annotations

import kopf
import pytest

from signet.controller.kubeapi import login_from_environment
from tests.faultproxy import FaultProxy


@pytest.fixture
def proxied(apiserver_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> kopf.ConnectionInfo:
    """The admin's credentials, with the fault proxy as the server."""
    monkeypatch.setenv("KUBECONFIG", str(apiserver_proxy.kubeconfig))
    info = login_from_environment()
    assert info is not None
    return info

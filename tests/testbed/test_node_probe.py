"""The node's "another kubelet" probe: only a live listener on the kubelet's socket counts,
not the file a killed kubelet leaves behind (which once failed every node test in CI)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from signet_dev import node


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(node, "_DEVICE_PLUGINS", tmp_path)
    return tmp_path / "kubelet.sock"


def test_no_socket_is_no_kubelet(plugins: Path) -> None:
    assert not node._kubelet_listening()


def test_a_socket_left_by_a_killed_kubelet_is_no_kubelet(plugins: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(plugins))
        server.listen(1)
    assert plugins.exists()
    assert not node._kubelet_listening()


def test_a_listening_socket_is_a_kubelet(plugins: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(plugins))
        server.listen(1)
        assert node._kubelet_listening()

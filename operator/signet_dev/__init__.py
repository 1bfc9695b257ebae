"""Development only: a real, local Kubernetes control plane (and node) for tests, the demo,
the benchmarks and `python -m signet_dev cluster up`. The operator never imports it."""

from signet_dev.controlplane import ControlPlaneError, LocalControlPlane, tools_bin

__all__ = ["ControlPlaneError", "LocalControlPlane", "tools_bin"]

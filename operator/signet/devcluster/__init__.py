"""A real, local Kubernetes control plane for tests, demos and `signet cluster up`."""

from signet.devcluster.controlplane import ControlPlaneError, LocalControlPlane, tools_bin

__all__ = ["ControlPlaneError", "LocalControlPlane", "tools_bin"]

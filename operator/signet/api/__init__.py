"""The API objects as plain, validated dataclasses.

The CRD schema rejects what it can at `kubectl apply`; what it cannot (or what an older
schema let through) is rejected here with a `SpecError` naming a reason, so the
controller can report Ready=False instead of crashing. Nothing here knows kopf or the
Kubernetes client.
"""

from signet.api.errors import SpecError

GROUP = "signet.dev"
VERSION = "v1alpha1"

__all__ = ["GROUP", "VERSION", "SpecError"]

"""A recorded, in-memory stand-in for Signet's small Kubernetes client (`KubeApi`).

Controller table tests drive a reconcile pass against it and then assert the exact calls
made, the objects left behind and the Events posted, the way cert-manager's controller
tests use a fake clientset. It imitates the apiserver only as far as the controllers rely
on it: resourceVersions that move on every write, 404 and 409 answers, merge patches of
status and metadata. Faults are queued per method (`fail`) and answered as the real client
answers once its own retries have run out: an `ApiError`. The cluster tests keep proving
the real thing; this makes each reason path a fast, precise row.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from signet.controller.kubeapi import ApiError

Obj = dict[str, Any]
Key = tuple[str, str, str]
"""(kind, namespace or "", name)."""


@dataclass
class Call:
    method: str
    key: Key
    body: Obj | None = None


def _merge(target: Obj, patch: Obj) -> None:
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge(target[name], value)
        else:
            target[name] = copy.deepcopy(value)


@dataclass
class RecordedKube:
    """Objects by (kind, namespace, name); every call appended to ``calls``."""

    objects: dict[Key, Obj] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    faults: dict[str, list[tuple[ApiError, bool]]] = field(default_factory=dict)
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # -- test side -------------------------------------------------------------------------
    def put(self, kind: str, body: Obj) -> Obj:
        """Store ``body`` as the apiserver would after a create."""
        stored = copy.deepcopy(body)
        metadata = stored.setdefault("metadata", {})
        metadata["resourceVersion"] = str(next(self._versions))
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        self.objects[(kind, metadata.get("namespace") or "", metadata["name"])] = stored
        return copy.deepcopy(stored)

    def fail(
        self,
        method: str,
        status: int,
        times: int = 1,
        reason: str = "Injected",
        *,
        applied: bool = False,
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``status``; with ``applied`` the
        write takes effect first (a response lost after the apiserver acted on it)."""
        self.faults.setdefault(method, []).extend(
            (ApiError(status, reason, f"injected {status}"), applied) for _ in range(times)
        )

    def writes(self) -> list[tuple[str, Key]]:
        """The calls that would have changed something, in order."""
        return [(c.method, c.key) for c in self.calls if not c.method.startswith(("get", "list"))]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((kind, namespace, name))

    # -- the KubeApi surface ---------------------------------------------------------------
    def _call(self, method: str, key: Key, body: Obj | None = None) -> ApiError | None:
        """Record the call; raise a queued fault, or return one to raise after the write."""
        self.calls.append(Call(method, key, copy.deepcopy(body)))
        queued = self.faults.get(method)
        if not queued:
            return None
        error, applied = queued.pop(0)
        if not applied:
            raise error
        return error

    @staticmethod
    def _answer(result: Obj, after: ApiError | None) -> Obj:
        if after is not None:
            raise after
        return result

    async def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        key = (kind, namespace or "", name)
        self._call("get_object", key)
        found = self.objects.get(key)
        return copy.deepcopy(found) if found is not None else None

    async def patch_status(self, kind: str, namespace: str | None, name: str, status: Obj) -> Obj:
        key = (kind, namespace or "", name)
        after = self._call("patch_status", key, status)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"{kind} {name} not found")
        _merge(current.setdefault("status", {}), status)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return self._answer(copy.deepcopy(current), after)

    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        return await self.get_object("Secret", namespace, name)

    async def create_secret(self, namespace: str, body: Obj) -> Obj:
        key = ("Secret", namespace, body["metadata"]["name"])
        after = self._call("create_secret", key, body)
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f"secrets {key[2]!r} already exists")
        return self._answer(self.put("Secret", body), after)

    async def replace_secret(self, namespace: str, name: str, body: Obj) -> Obj:
        key = ("Secret", namespace, name)
        after = self._call("replace_secret", key, body)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"secrets {name!r} not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        return self._answer(self.put("Secret", body), after)

    async def patch_secret(self, namespace: str, name: str, patch: Obj) -> Obj:
        key = ("Secret", namespace, name)
        self._call("patch_secret", key, patch)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"secrets {name!r} not found")
        _merge(current, patch)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(current)

    async def apply_configmap(
        self, namespace: str, name: str, labels: dict[str, str], data: dict[str, str]
    ) -> None:
        key = ("ConfigMap", namespace, name)
        self._call("apply_configmap", key, {"data": data})
        self.put("ConfigMap", {"metadata": {"name": name, "namespace": namespace}, "data": data})

    async def get_namespace(self, name: str) -> Obj | None:
        return await self.get_object("Namespace", "", name)

    async def create_event(self, namespace: str, body: Obj) -> None:
        self._call("create_event", ("Event", namespace, body["metadata"]["name"]), body)
        self.events.append(copy.deepcopy(body))

    async def patch_event(self, namespace: str, name: str, patch: Obj) -> Obj:
        self._call("patch_event", ("Event", namespace, name), patch)
        for event in self.events:
            if event["metadata"]["name"] == name:
                _merge(event, patch)
                return copy.deepcopy(event)
        raise ApiError(404, "NotFound", f"events {name!r} not found")

"""``signet renew``: ask the operator for a fresh certificate now, like ``cmctl renew``.

The request is an annotation, not a spec change, so it works with any RBAC that may patch
Certificates and needs no extra API. The operator re-issues when the stamp is later than
the Secret's ``signet.dev/issued-at``; both have one-second resolution, so a Secret written
in the current second would make the stamp look stale. We wait for the next second rather
than stamp a future time, which the operator ignores (it would otherwise re-issue in a loop).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException

from signet.api import GROUP, VERSION
from signet.api.certificate import RENEW_ANNOTATION
from signet.ops.kube import Cluster, ToolError, api_error
from signet.secretformat import layout

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Target:
    """A Certificate to renew, and the Secret whose issued-at the stamp must exceed."""

    namespace: str
    name: str
    secret_name: str


def _parse(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, STAMP_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def stamp_after(
    issued: Sequence[datetime.datetime],
    now: Callable[[], datetime.datetime],
    sleep: Callable[[float], None],
) -> str:
    """The current second, once it is strictly later than every ``issued`` time."""
    latest = max(issued, default=None)
    while True:
        current = now()
        second = current.replace(microsecond=0)
        if latest is None or second > latest:
            return second.strftime(STAMP_FORMAT)
        sleep((latest + datetime.timedelta(seconds=1) - current).total_seconds() + 0.01)


def _targets(cluster: Cluster, names: Sequence[str], namespace: str | None) -> list[Target]:
    found: list[dict[str, Any]] = []
    try:
        if names:
            assert namespace is not None
            for name in names:
                found.append(
                    cluster.custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, "certificates", name
                    )
                )
        elif namespace is None:
            found = cluster.custom.list_cluster_custom_object(GROUP, VERSION, "certificates")[
                "items"
            ]
        else:
            found = cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "certificates"
            )["items"]
    except ApiException as error:
        if names and error.status == 404:
            raise ToolError(f"Certificate {namespace}/{name} not found") from None
        raise api_error(error, "Certificates") from None
    return [
        Target(o["metadata"]["namespace"], o["metadata"]["name"], o["spec"]["secretName"])
        for o in found
    ]


def _issued_at(cluster: Cluster, target: Target) -> datetime.datetime | None:
    try:
        secret = cluster.core.read_namespaced_secret(target.secret_name, target.namespace)
    except ApiException as error:
        if error.status == 404:
            return None  # never issued: any stamp is later
        raise
    return _parse((secret.metadata.annotations or {}).get(layout.ISSUED_AT))


def renew(
    cluster: Cluster,
    names: Sequence[str],
    namespace: str | None,
    *,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Stamp the named Certificates (or all in ``namespace``; None = every namespace).

    Returns one line per Certificate stamped. Raises ToolError when a name is unknown or
    there is nothing to renew, so scripts notice.
    """
    targets = _targets(cluster, names, namespace)
    if not targets:
        where = f"namespace {namespace}" if namespace else "any namespace"
        raise ToolError(f"no Certificates in {where}")
    issued = [t for t in (_issued_at(cluster, target) for target in targets) if t is not None]
    stamp = stamp_after(issued, now, sleep)
    lines = []
    for target in targets:
        patch = {"metadata": {"annotations": {RENEW_ANNOTATION: stamp}}}
        try:
            cluster.custom.patch_namespaced_custom_object(
                GROUP, VERSION, target.namespace, "certificates", target.name, patch
            )
        except ApiException as error:
            raise api_error(error, f"Certificate {target.namespace}/{target.name}") from None
        lines.append(
            f"Manually triggered issuance of Certificate {target.namespace}/{target.name} "
            f"({RENEW_ANNOTATION}={stamp})"
        )
    return lines

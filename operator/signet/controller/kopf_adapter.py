"""The one place Signet reaches into kopf's private API, and why.

kopf remembers every watched object (a memo copy and the state of error throttling,
daemons, timers, indexes and resume handlers) until it is deleted. Signet registers only
``on.event`` handlers, which use none of that, and kopf watches a request object per pod
certificate (PodCertificateRequests, CSRs, cert-manager's CertificateRequests): a memory per
request, kept for nothing, a large share of the operator's memory at scale (Certificates
and Secrets are not kopf's to watch: see `signet.controller.informer`). kopf has no public
switch for it; ``kopf.run(memories=...)`` accepts a ``ResourceMemories``, whose class lives
in ``kopf._core``. kopf's own admission path recalls memories the same ephemeral way.

Everything private is imported here, and `tests/unit/test_kopf_adapter.py` fails loudly if
a kopf upgrade moves or changes it, instead of the operator silently keeping memories.
"""

from __future__ import annotations

from typing import Any

import kopf
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

TESTED_KOPF = (1, 45)
"""The kopf minor release these private names were checked against."""


class EventOnlyMemories(ResourceMemories):
    """kopf's per-object memory, handed out for each event but never kept."""

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )


def run_options() -> dict[str, Any]:
    """What ``kopf.run`` gets beyond its public options."""
    return {"memories": EventOnlyMemories()}


def registered_handlers(registry: Any) -> dict[str, list[Any]]:
    """The handlers of each kind in a kopf registry (kopf has no public view of them):
    EventOnlyMemories is safe only while no kind that needs per-object memory is used."""
    return {
        "watching": registry._watching.get_all_handlers(),
        "changing": registry._changing.get_all_handlers(),
        "spawning": registry._spawning.get_all_handlers(),
        "indexing": registry._indexing.get_all_handlers(),
        "webhooks": registry._webhooks.get_all_handlers(),
    }

"""kopf builds and reads back no diff-base: Signet has no change handlers."""

from __future__ import annotations

import kopf

from signet.controller import handlers


def test_no_essence_is_built_or_read_back_for_change_detection() -> None:
    stored = '{"spec": {"old": true}}'
    body = kopf.Body(
        {
            "metadata": {
                "name": "web",
                "annotations": {"kopf.zalando.org/last-handled-configuration": stored},
            },
            "data": {"tls.key": "S0VZ"},
        }
    )
    storage = handlers.NoEssence()
    assert kopf.AnnotationsDiffBaseStorage().fetch(body=body) == {"spec": {"old": True}}
    assert storage.fetch(body=body) is None
    assert storage.build(body=body) is None

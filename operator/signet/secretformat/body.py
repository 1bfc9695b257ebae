"""The Secret object Signet writes for a Certificate, built in one place.

The operator writes it and the benchmark's floor writes one shaped exactly like it (the
apiserver's cost grows with what a write carries, so a fair floor must carry the same).
Labels make it visible to the operator's selector-filtered watch; the owner reference lets
the garbage collector remove it with its Certificate.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from signet.api import GROUP, VERSION
from signet.secretformat import layout

Obj = dict[str, Any]


def secret_body(
    *,
    namespace: str,
    name: str,
    certificate: str,
    certificate_uid: str,
    secret_type: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    resource_version: str | None = None,
) -> Obj:
    """A Secret for Certificate ``certificate`` holding ``data``; ``resource_version`` makes
    it a replacement that fails with 409 if someone else wrote in between."""
    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "labels": {
            **labels,
            layout.MANAGED_BY_LABEL: layout.MANAGED_BY,
            layout.CERTIFICATE_LABEL: layout.certificate_label_value(certificate),
        },
        "annotations": {**annotations, layout.CERTIFICATE_NAME: certificate},
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Certificate",
                "name": certificate,
                "uid": certificate_uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ],
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": secret_type,
        "metadata": metadata,
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }

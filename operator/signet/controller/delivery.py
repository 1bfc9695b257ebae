"""Delivering a Certificate's identity: the Secret writes, and the key a renewal may keep.

The Secret is the Certificate path's destination (Kubernetes' own certificate requests get
their status written instead). Every write goes through the watch cache's own-write hold,
so the watch event it causes is recognised as ours and costs nothing.
"""

from __future__ import annotations

import base64
import datetime
import logging
from collections.abc import Callable

from signet import issuance
from signet.api import GROUP
from signet.api.certificate import CertificateSpec
from signet.api.times import timestamp_or_none
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.unwritten import Unwritten
from signet.controller.watchcache import WatchCache, secret_id
from signet.observe.metrics import Metrics
from signet.pki import keys
from signet.secretformat import layout
from signet.secretformat.body import secret_body
from signet.secretformat.summary import SecretSummary

logger = logging.getLogger(__name__)


class SecretWriter:
    """Writes the Secrets of Certificates: create, replace with a resourceVersion
    precondition, or patch only the metadata that drifted."""

    def __init__(
        self,
        api: KubeApi,
        cache: WatchCache,
        metrics: Metrics,
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self._api = api
        self._cache = cache
        self._metrics = metrics
        self._clock = clock

    async def reusable_key(
        self, spec: CertificateSpec, summary: SecretSummary | None
    ) -> keys.LeafPrivateKey | None:
        """rotationPolicy Never: keep the key in an intact Secret if it fits the spec."""
        if spec.private_key.rotation_policy != "Never" or summary is None or summary.problem:
            return None
        secret = await self._api.get_secret(summary.namespace, summary.name)
        field = layout.SSH_PRIVATE_KEY if spec.ssh else layout.TLS_KEY
        encoded = ((secret or {}).get("data") or {}).get(field)
        if not encoded:
            return None
        try:
            key = keys.load_private_key(base64.b64decode(encoded))
        except ValueError:
            return None
        fits = keys.fits(key, spec.private_key.algorithm, spec.private_key.size)
        return key if fits else None

    async def write(
        self,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        signed: Unwritten,
        summary: SecretSummary | None,
    ) -> Obj:
        """Create the Secret, or replace the one ``summary`` describes (409 if it changed
        since). Raises ApiError."""
        metadata = body["metadata"]
        issued = signed.issued
        secret = secret_body(
            namespace=metadata["namespace"],
            name=spec.secret_name,
            certificate=metadata["name"],
            certificate_uid=metadata["uid"],
            secret_type=issued.secret_type,
            data=issued.data,
            labels=spec.secret_labels,
            annotations={
                **spec.secret_annotations,
                **issued.annotations,
                layout.ISSUER_NAME: spec.issuer_ref.name,
                layout.ISSUER_KIND: spec.issuer_ref.kind,
                layout.ISSUER_GROUP: GROUP,
                layout.KEY_VERSION: material.kms_key.key_version,
                layout.SPEC_HASH: spec.content_hash(),
                layout.REVISION: str(signed.revision),
                layout.ISSUED_AT: timestamp_or_none(self._clock()) or "",
            },
            resource_version=summary.resource_version if summary else None,
        )
        if summary is None:
            self._metrics.secret_writes.labels("create").inc()
            return await self._api.create_secret(metadata["namespace"], secret)
        self._metrics.secret_writes.labels("replace").inc()
        return await self._api.replace_secret(metadata["namespace"], spec.secret_name, secret)

    async def repair(self, spec: CertificateSpec, summary: SecretSummary) -> bool:
        """Put secretTemplate's labels and annotations back without a new signature; False
        when the patch failed (logged: the next pass tries again)."""
        patch = {
            "metadata": {
                "labels": dict(spec.secret_labels),
                "annotations": dict(spec.secret_annotations),
            }
        }
        secret = secret_id(summary.namespace, summary.name)
        with self._cache.own_write(secret):
            try:
                written = await self._api.patch_secret(summary.namespace, summary.name, patch)
            except ApiError as error:
                logger.warning("could not repair Secret %s/%s: %s", *secret, error)
                return False
            self._metrics.secret_writes.labels("patch").inc()
            self._cache.record_secret(secret, written)
        return True

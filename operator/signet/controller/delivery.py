"""Delivering a Certificate's identity: the Secret writes, and the key a renewal may keep.

The Secret is the Certificate path's destination (Kubernetes' own certificate requests get
their status written instead). Every write goes through the watch cache's own-write hold,
so the watch event it causes is recognised as ours and costs nothing. The optional outputs
(keystores, additionalOutputFormats) are made here from what is written, at issuance or,
when only they changed, from the Secret's own key and chain; a keystore password is read
from its Secret just before and is never kept, logged or put in a message.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Callable

from signet import issuance
from signet.api import GROUP
from signet.api.certificate import CertificateSpec
from signet.api.outputs import MAX_PASSWORD
from signet.api.times import timestamp_or_none
from signet.controller.kubeapi import ApiError, KubeApi, Obj
from signet.controller.unwritten import Unwritten
from signet.controller.watchcache import WatchCache, secret_id
from signet.observe.metrics import Metrics
from signet.pki import keys
from signet.reasons import Reason
from signet.secretformat import layout, outputs
from signet.secretformat.body import secret_body
from signet.secretformat.summary import SecretSummary, summarize

logger = logging.getLogger(__name__)


async def _render(
    data: dict[str, bytes], spec: CertificateSpec, password: bytes | None
) -> dict[str, bytes]:
    """A keystore's key derivation takes milliseconds of CPU: off the event loop."""
    if spec.outputs.pkcs12 is None:
        return outputs.render(data, spec.outputs, password)
    return await asyncio.to_thread(outputs.render, data, spec.outputs, password)


class PasswordUnavailable(Exception):
    """The keystore password cannot be read; retried, since Signet does not watch the
    Secret that should hold it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = Reason.KEYSTORE_PASSWORD_NOT_FOUND, message


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

    async def keystore_password(self, spec: CertificateSpec, namespace: str) -> bytes | None:
        """The PKCS#12 password the spec names, or None when no keystore is asked for.
        Raises PasswordUnavailable (its message names the Secret and key, never a value)
        and ApiError."""
        pkcs12 = spec.outputs.pkcs12
        if pkcs12 is None:
            return None
        if pkcs12.password is not None:
            return pkcs12.password.encode()
        ref = pkcs12.password_secret
        assert ref is not None
        where = (
            f"spec.keystores.pkcs12.passwordSecretRef: key {ref.key!r} of Secret "
            f"{namespace}/{ref.name}"
        )
        secret = await self._api.get_secret(namespace, ref.name)
        if secret is None:
            raise PasswordUnavailable(f"{where}: the Secret does not exist")
        encoded = (secret.get("data") or {}).get(ref.key)
        try:
            password = base64.b64decode(encoded or "", validate=True)
        except ValueError:
            password = b""
        if not password or len(password) > MAX_PASSWORD:
            raise PasswordUnavailable(
                f"{where}: missing, empty or longer than {MAX_PASSWORD} bytes"
            )
        return password

    async def write(
        self,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        signed: Unwritten,
        summary: SecretSummary | None,
        password: bytes | None = None,
    ) -> Obj:
        """Create the Secret, or replace the one ``summary`` describes (409 if it changed
        since). ``password`` is the keystore password (`keystore_password`). Raises
        ApiError."""
        metadata = body["metadata"]
        issued = signed.issued
        data, extra = issued.data, {}
        if issued.secret_type == layout.TLS_TYPE:
            data = await _render(data, spec, password)
            fingerprint = spec.outputs.fingerprint()
            extra = {layout.OUTPUTS: fingerprint} if fingerprint else {}
        secret = secret_body(
            namespace=metadata["namespace"],
            name=spec.secret_name,
            certificate=metadata["name"],
            certificate_uid=metadata["uid"],
            secret_type=issued.secret_type,
            data=data,
            labels=spec.secret_labels,
            annotations={
                **spec.secret_annotations,
                **issued.annotations,
                **extra,
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

    async def rewrite_outputs(
        self, spec: CertificateSpec, summary: SecretSummary, password: bytes | None
    ) -> bool:
        """Rewrite the Secret's data for the spec's outputs from the key and chain it holds,
        without a signature (and put secretTemplate back on the way). False when the Secret
        is no longer intact or no longer there: its watch event decides what comes next.
        Raises ApiError (a 409 if it changed since it was read)."""
        secret_key = secret_id(summary.namespace, summary.name)
        current = await self._api.get_secret(*secret_key)
        if current is None or summarize(current).problem is not None:
            return False
        raw = current.get("data") or {}
        data = {key: base64.b64decode(raw[key]) for key in layout.REQUIRED_KEYS[layout.TLS_TYPE]}
        rendered = await _render(data, spec, password)
        metadata = current["metadata"]
        annotations = {**(metadata.get("annotations") or {}), **spec.secret_annotations}
        annotations.pop(layout.OUTPUTS, None)
        fingerprint = spec.outputs.fingerprint()
        if fingerprint:
            annotations[layout.OUTPUTS] = fingerprint
        metadata["annotations"] = annotations
        metadata["labels"] = {**(metadata.get("labels") or {}), **spec.secret_labels}
        current["data"] = {key: base64.b64encode(value).decode() for key, value in rendered.items()}
        with self._cache.own_write(secret_key):
            written = await self._api.replace_secret(summary.namespace, summary.name, current)
            self._metrics.secret_writes.labels("replace").inc()
            self._cache.record_secret(secret_key, written, ours=True)
        return True

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

"""Sign once, audit every signature, and account for what became of each one.

Every request path spends KMS signatures through here. The signature's audit record is
written by issuance the moment KMS answers; this adds the other half of the trail, a
delivery record per outcome (written, write failed, discarded and why), and keeps a signed
certificate whose delivery failed so that the next attempt delivers it instead of signing
again (see `signet.controller.unwritten`).
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from signet import issuance
from signet.api.certificate import CertificateSpec
from signet.controller.unwritten import Unwritten, UnwrittenStore, Waiting
from signet.controller.watchcache import CertId
from signet.decisions.certificate import renewal_time
from signet.observe.audit import AuditLog
from signet.observe.metrics import Metrics
from signet.pki import keys, kmskey
from signet.reasons import Reason
from signet.secretformat.summary import SecretSummary

Obj = dict[str, Any]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Waiting)


class Ledger(Generic[K, V]):
    """Signed certificates waiting for their write, each outcome a delivery record that
    points at the signature record: written, write failed, or discarded and why."""

    def __init__(
        self,
        audit: AuditLog,
        store: UnwrittenStore[K, V] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._audit = audit
        self._store: UnwrittenStore[K, V] = store if store is not None else UnwrittenStore()
        self._metrics = metrics
        if metrics is not None:
            metrics.track_undelivered(self._store.__len__)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: K) -> V | None:
        return self._store.get(key)

    def keep(self, key: K, item: V) -> None:
        """Keep ``item`` for the next attempt; what it pushes out is given up, audited."""
        for given_up in self._store.keep(key, item):
            self.record(
                given_up,
                "discarded",
                reason="Evicted",
                message="too many certificates waiting to be written; the oldest is given up",
            )

    def write_failed(self, key: K, item: V, error: Exception, **fields: Any) -> None:
        """Keep ``item``; its record says why it is not there yet."""
        self.keep(key, item)
        self.record(item, "write-failed", error=str(error), **fields)

    def written(self, key: K, item: V | None = None, **fields: Any) -> bool:
        """``item`` (by default the one kept for ``key``) reached its object; False when
        there is nothing to say because no certificate was named or kept."""
        kept = self._store.pop(key)
        item = item if item is not None else kept
        if item is not None:
            self.record(item, "written", **fields)
        return item is not None

    def discard(self, key: K, reason: str, message: str) -> None:
        kept = self._store.pop(key)
        if kept is not None:
            self.record(kept, "discarded", reason=reason, message=message)

    def record(self, item: V, outcome: str, **fields: Any) -> None:
        if outcome == "discarded" and self._metrics is not None:
            self._metrics.signatures_discarded.labels(str(fields.get("reason", ""))).inc()
        self._audit.delivery(
            item.signature, outcome=outcome, **item.subject(), serialNumber=item.serial, **fields
        )


class Signatures:
    """The signatures of one request path: spent through `sign`, delivered or given up
    through the other methods, each step on the audit trail."""

    def __init__(
        self,
        audit: AuditLog,
        store: UnwrittenStore[CertId, Unwritten] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._audit = audit
        self._ledger: Ledger[CertId, Unwritten] = Ledger(audit, store, metrics)

    def __contains__(self, cert: object) -> bool:
        return cert in self._ledger

    async def sign(
        self,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        trigger: Reason,
        reuse_key: keys.LeafPrivateKey | None,
    ) -> Unwritten:
        """The one signature for this certificate. Raises KmsError and ValueError as
        issuance does; a signature spent without a certificate (SignatureSpentError) is
        audited as discarded before it propagates."""
        metadata = body["metadata"]
        cert = CertId((metadata["namespace"], metadata["name"]))
        revision = int((body.get("status") or {}).get("revision") or 0) + 1
        certificate = {"namespace": cert[0], "name": cert[1], "uid": metadata["uid"]}
        context = {
            "purpose": "certificate",
            "outcome": "signed",
            "issuer": material.spec.ref,
            "keyVersion": material.kms_key.key_version,
            "keyAlgorithm": material.kms_key.algorithm,
            "certificate": certificate,
            "secret": spec.secret_name,
            "trigger": trigger,
            "revision": revision,
        }
        try:
            issued = await issuance.issue(
                material,
                spec,
                namespace=cert[0],
                name=cert[1],
                reuse_key=reuse_key,
                record=lambda fields: self._audit.signature(**context, **fields),
            )
        except kmskey.SignatureSpentError as error:
            self._audit.spent(error.signature, error, certificate=certificate)
            raise
        return Unwritten(
            cert=cert,
            issued=issued,
            signature=issued.signature,
            uid=metadata["uid"],
            generation=int(metadata.get("generation") or 0),
            spec_hash=spec.content_hash(),
            key_version=material.kms_key.key_version,
            revision=revision,
            trigger=trigger,
            renew_at=renewal_time(
                metadata["uid"], issued.not_before, issued.not_after, spec.renew_before_or_default()
            ),
        )

    def usable(
        self,
        cert: CertId,
        body: Obj,
        spec: CertificateSpec,
        material: issuance.IssuerMaterial,
        now: datetime.datetime,
    ) -> Unwritten | None:
        """A certificate signed on an earlier attempt whose delivery failed, if it is still
        what this attempt would sign; one that is not is given up (and audited as such)."""
        kept = self._ledger.get(cert)
        if kept is None:
            return None
        generation = int(body["metadata"].get("generation") or 0)
        if kept.usable_for(
            body["metadata"]["uid"],
            generation,
            spec.content_hash(),
            material.kms_key.key_version,
            now,
        ):
            return kept
        self.discard(
            cert,
            "Superseded",
            "the spec or the issuer's key changed, or renewal came due, before it was written",
        )
        return None

    def delivery_failed(self, item: Unwritten, target: str, error: Exception) -> None:
        """Keep ``item`` for the next attempt; its record says why it is not there yet."""
        self._ledger.write_failed(item.cert, item, error, secret=target)

    def delivered(self, item: Unwritten, target: str, resource_version: str) -> None:
        self._ledger.written(item.cert, item, secret=target, resourceVersion=resource_version)

    def settle(self, cert: CertId, summary: SecretSummary) -> None:
        """The Secret is up to date: either with the certificate that waited (a write that
        succeeded although its answer was lost) or without it."""
        kept = self._ledger.get(cert)
        if kept is None:
            return
        if summary.serial == kept.issued.serial:
            self._ledger.written(
                cert,
                secret=f"{summary.namespace}/{summary.name}",
                resourceVersion=summary.resource_version,
                note="found in the Secret after the write's answer was lost",
            )
        else:
            self._ledger.discard(cert, "Superseded", "the Secret became up to date without it")

    def discard(self, cert: CertId, reason: str, message: str) -> None:
        self._ledger.discard(cert, reason, message)

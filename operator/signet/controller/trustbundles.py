"""Signer-linked ClusterTrustBundles: each pod-certificate issuer's trust anchor, where the
kubelet and pods look for it.

A pod that gets its certificate through a ``podCertificate`` volume verifies its peers
with a ``clusterTrustBundle`` projection naming the same signer, so every issuer that signs
PodCertificateRequests publishes its trust anchor as a ClusterTrustBundle linked to its
signer, and republishes it when the CA changes. The per-namespace ConfigMaps
(`signet.controller.trust`) stay: Certificates' pods mount those.

A bundle is withdrawn only when its issuer is deleted. An outage, a CA that failed to load
or an issuer that stopped signing pod certificates leaves it in place: pods holding
certificates from that CA still verify their peers with it until those expire. An issuer
deleted while no operator ran has no event to tell of it, so a start looks at every bundle
Signet published (`published_issuers`).
"""

from __future__ import annotations

import hashlib
import logging

from signet.controller.issuers import IssuerId, IssuerState
from signet.controller.kubeapi import ApiError, KubeApi
from signet.decisions.podcertificate import signer_name
from signet.decisions.signers import issuer_of
from signet.issuance import TrustSet

logger = logging.getLogger(__name__)

ISSUER_LABEL = "signet.dev/issuer"
ISSUER_KIND_LABEL = "signet.dev/issuer-kind"
ISSUER_NAMESPACE_LABEL = "signet.dev/issuer-namespace"
NAME_SUFFIX = "trust-anchor"
MAX_NAME = 253


def bundle_name(issuer: IssuerId) -> str:
    """``<signer name with / as :>:trust-anchor``, the prefix the apiserver demands of a
    signer-linked bundle; a name too long for the API keeps the prefix and hashes the
    rest, as the prefix is what links it."""
    kind, namespace, name = issuer
    prefix = signer_name(kind, namespace, name).replace("/", ":")
    full = f"{prefix}:{NAME_SUFFIX}"
    if len(full) <= MAX_NAME:
        return full
    return f"{prefix[: MAX_NAME - 14]}:{hashlib.sha256(full.encode()).hexdigest()[:12]}"


MANAGED = "app.kubernetes.io/managed-by=signet"


async def published_issuers(api: KubeApi, namespaces: tuple[str, ...]) -> list[IssuerId]:
    """The issuers behind the bundles Signet published, as their signer names say (labels
    are cut to 63 characters; the signer name is whole); with ``namespaces``, only the
    Issuers this installation serves and the ClusterIssuers."""
    found: list[IssuerId] = []
    for bundle in await api.list_cluster_trust_bundles(MANAGED):
        issuer = issuer_of(str((bundle.get("spec") or {}).get("signerName") or ""))
        if issuer is None:
            continue
        if namespaces and issuer[0] == "Issuer" and issuer[1] not in namespaces:
            continue  # another installation's
        found.append(issuer)
    return found


def _label_value(value: str) -> str:
    return value[:63].rstrip("-_.")


class ClusterTrustBundlePublisher:
    """Publishes on every issuer change; remembers what it wrote, so a restart or a
    re-check of an unchanged issuer costs one GET at most and no write."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._published: dict[IssuerId, str] = {}

    def holds(self, issuer: IssuerId, trust: TrustSet) -> bool:
        """Whether the issuer's bundle was written with exactly ``trust``'s anchors."""
        return not trust.ca_certificates or self._published.get(issuer) == "".join(
            trust.ca_certificates
        )

    async def publish(self, issuer: IssuerId, state: IssuerState | None) -> bool:
        """Bring the issuer's bundle up to date; False when the write failed (retry)."""
        if state is None:
            return await self._withdraw_if_deleted(issuer)
        if not state.ready or state.material is None:
            return True  # left as it is: an outage must not withdraw trust
        material = state.material
        if not material.spec.pod_certificates.enabled or not state.trust.ca_certificates:
            return True
        pem = "".join(state.trust.ca_certificates)
        if self._published.get(issuer) == pem:
            return True
        kind, namespace, name = issuer
        labels = {
            ISSUER_LABEL: _label_value(name),
            ISSUER_KIND_LABEL: kind,
            "app.kubernetes.io/managed-by": "signet",
        }
        if namespace:
            labels[ISSUER_NAMESPACE_LABEL] = namespace
        try:
            await self._api.apply_cluster_trust_bundle(
                bundle_name(issuer), labels, signer_name(kind, namespace, name), pem
            )
        except ApiError as error:
            logger.warning(
                "%s %s: ClusterTrustBundle not published: %s", kind, material.spec.ref, error
            )
            return False
        self._published[issuer] = pem
        return True

    async def _withdraw_if_deleted(self, issuer: IssuerId) -> bool:
        """No state: either not resolved yet (nothing to do) or deleted (withdraw)."""
        kind, namespace, name = issuer
        try:
            if await self._api.get_object(kind, namespace or None, name) is not None:
                return True
            withdrawn = await self._api.delete_cluster_trust_bundle(
                bundle_name(issuer), signer_name(kind, namespace, name)
            )
        except ApiError as error:
            logger.warning("%s %s: ClusterTrustBundle not withdrawn: %s", kind, name, error)
            return False
        self._published.pop(issuer, None)
        if withdrawn:
            logger.info(
                "%s %s deleted: ClusterTrustBundle %s withdrawn", kind, name, bundle_name(issuer)
            )
        return True

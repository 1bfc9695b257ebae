"""Trust distribution: each issuer's CA bundle and SSH CA key, published as a ConfigMap in
every namespace that holds Certificates of that issuer.

Pods that only need to *trust* (verify peers, accept SSH user certificates, check host
certificates) mount the ConfigMap instead of reading anyone's Secret. Publishing is
remembered per (issuer, namespace, CA material), so steady state costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from signet.controller.issuers import IssuerId
from signet.controller.kubeapi import ApiError, KubeApi
from signet.issuance import TrustSet

logger = logging.getLogger(__name__)

TRUST_LABEL = "signet.dev/trust-bundle"


def configmap_name(issuer: IssuerId) -> str:
    """``signet-issuer-<name>-ca`` or ``signet-clusterissuer-<name>-ca``, hashed if long."""
    kind, _, name = issuer
    full = f"signet-{kind.lower()}-{name}-ca"
    if len(full) <= 253:
        return full
    return f"signet-{kind.lower()}-{name[:200]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}-ca"


def bundle(trust: TrustSet) -> dict[str, str]:
    """ca.crt (the trust anchors, as cert-manager's trust bundles hold them), the SSH user CA
    keys for TrustedUserCAKeys and @cert-authority lines for ssh_known_hosts. Two of each
    during a CA rotation, so peers accept leaves of either key."""
    data: dict[str, str] = {}
    if trust.ca_certificates:
        data["ca.crt"] = "".join(trust.ca_certificates)
    if trust.ssh_ca_lines:
        data["ssh-ca.pub"] = "".join(f"{line}\n" for line in trust.ssh_ca_lines)
        data["ssh_known_hosts"] = "".join(
            f"@cert-authority * {line}\n" for line in trust.ssh_ca_lines
        )
    return data


def _digest(data: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()


class TrustPublisher:
    """Writes each issuer's trust bundle into the namespaces that use it, once per namespace
    and CA, with concurrent publishers of a namespace waiting for the first."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._published: dict[tuple[IssuerId, str], str] = {}
        self._digests: dict[IssuerId, tuple[TrustSet, str]] = {}
        self._locks: dict[tuple[IssuerId, str], asyncio.Lock] = {}

    def _digest_of(self, issuer: IssuerId, trust: TrustSet) -> str:
        """The bundle's digest, worked out once per trust set: ``published`` is asked on
        every reconcile, and a PEM encoding and a hash each time were 1% of issuing."""
        known = self._digests.get(issuer)
        if known is None or known[0] is not trust:
            known = (trust, _digest(bundle(trust)))
            self._digests[issuer] = known
        return known[1]

    def published(self, issuer: IssuerId, trust: TrustSet, namespace: str) -> bool:
        return self._published.get((issuer, namespace)) == self._digest_of(issuer, trust)

    async def publish(self, issuer: IssuerId, trust: TrustSet, namespace: str) -> None:
        """Publish unless already done. The first Certificates of a namespace arrive
        together; one of them publishes while the others wait for it, instead of each
        racing its own GET and create (500 at once made 24 GETs and 9 creates)."""
        digest = self._digest_of(issuer, trust)
        key = (issuer, namespace)
        if self._published.get(key) == digest:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            if self._published.get(key) == digest:
                return
            labels = {
                TRUST_LABEL: issuer[2][:63].rstrip("-_."),
                "app.kubernetes.io/managed-by": "signet",
            }
            try:
                await self._api.apply_configmap(
                    namespace, configmap_name(issuer), labels, bundle(trust)
                )
            except ApiError as error:
                logger.warning(
                    "could not publish trust bundle to %s: HTTP %s", namespace, error.status
                )
                return
            self._published[key] = digest

"""The operator's signers, one per key for the life of the process, and the PKCS#11 PIN
read from an issuer's Secret.

A signer fetches its public key once and shares its limiter with every Certificate it
signs for, so the issuer controller asks this cache rather than a backend. It stands apart
from the issuer controller because what a signer needs beyond its key (a PKCS#11 module,
where its PIN is read) is a backend matter, not one of issuer state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signet.api.issuer import IssuerSpec
from signet.controller.kubeapi import ApiError, KubeApi
from signet.kms import backends
from signet.kms.cloudkms import RetryPolicy
from signet.kms.errors import KmsInvalidArgument, KmsUnavailable
from signet.kms.limiter import SignLimiter
from signet.kms.signer import Signer


class SignerCache:
    """Signers by key and by what a PKCS#11 key also needs (module, algorithm, PIN)."""

    def __init__(
        self,
        api: KubeApi,
        *,
        kms_client: Any,
        limiter: SignLimiter,
        operator_namespace: str,
        observe_sign: Callable[[Any], None] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._api = api
        self._kms_client = kms_client
        self._limiter = limiter
        self._operator_namespace = operator_namespace
        self._observe_sign = observe_sign
        self._retry = retry
        self._signers: dict[str, Signer] = {}

    def signer(self, key_version: str, spec: IssuerSpec | None) -> Signer:
        """The signer of ``key_version``, made on first use.

        A PKCS#11 key (``spec.kms.pkcs11``; ``key_version`` is then its URI) also needs
        its module and PIN from ``spec``. The cache key includes module, algorithm and
        where the PIN is read, so an edited spec gets a fresh signer and each issuer proves
        its own PIN (a signer shared with another issuer would sign with that issuer's).
        Without a spec, a PKCS#11 key is served only by a signer made earlier.
        """
        pkcs11 = spec.pkcs11 if spec is not None else None
        cache_key = key_version
        if pkcs11 is not None and spec is not None:
            ref = pkcs11.pin_secret
            pin_at = pkcs11.pin_file
            if ref is not None:
                namespace = spec.namespace or self._operator_namespace
                pin_at = f"secret:{namespace}/{ref.name}/{ref.key}"
            cache_key = f"{key_version} {pkcs11.module} {pkcs11.algorithm} {pin_at}"
        elif key_version.startswith("pkcs11:"):
            known = [s for s in self._signers.values() if s.key_version == key_version]
            if known:
                return known[0]
            raise KmsInvalidArgument(
                key_version, "no issuer names this PKCS#11 key any more: module and PIN unknown"
            )
        signer = self._signers.get(cache_key)
        if signer is None:
            signer = backends.open_signer(
                key_version,
                pkcs11,
                kms_client=self._kms_client,
                limiter=self._limiter,
                observe=self._observe_sign,
                retry=self._retry,
                pin_source=self._pin_reader(spec) if spec is not None else None,
            )
            self._signers[cache_key] = signer
        return signer

    def _pin_reader(self, spec: IssuerSpec) -> backends.PinSource | None:
        """Reads the PIN from the issuer's PIN Secret at each login (never cached here, so
        an updated Secret is used after a refused PIN); None for a pinFile."""
        pkcs11 = spec.pkcs11
        if pkcs11 is None or pkcs11.pin_secret is None:
            return None
        ref, key_version = pkcs11.pin_secret, spec.key_version
        namespace = spec.namespace or self._operator_namespace

        async def read() -> str:
            try:
                secret = await self._api.get_secret(namespace, ref.name)
            except ApiError as error:
                raise KmsUnavailable(
                    key_version, f"PIN Secret {namespace}/{ref.name} could not be read: {error}"
                ) from None
            return backends.pin_from_secret(secret, namespace, ref, key_version)

        return read

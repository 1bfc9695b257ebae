"""The Cloud KMS signing backend: one :class:`CloudKmsSigner` per CA key version.

Why it is more than a thin wrapper around ``asymmetric_sign``:

* **Integrity.** Digests go out with CRC32C and every response is checked (checksum,
  ``verified_*_crc32c``, resource name), and the signature is verified locally against the
  cached public key, so a corrupted or misrouted signature never reaches a certificate.
* **Accountability.** Each attempt is exactly one RPC (google-api-core's own retry is
  disabled), so "one AsymmetricSign per certificate" is observable at the server and
  retries are ours: exponential backoff with jitter under one overall deadline.
* **Protecting the KMS quota.** A process-wide :class:`SignLimiter` bounds concurrency
  and signatures per second across all signers sharing it.
* **Clear failures.** Errors are :class:`KmsError` subclasses with a short CamelCase
  ``reason`` (for Kubernetes conditions and metrics) and a message naming the key version.

grpc.aio channels belong to the event loop they were created on: build the client with
:func:`create_client` *inside* that loop and call the signer only from it (other threads
use ``asyncio.run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.api_core.exceptions import GoogleAPICallError
from google.api_core.gapic_v1.client_info import ClientInfo
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
from google.cloud.kms_v1 import types as kms
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcAsyncIOTransport,
)

from signet import __version__
from signet.kms import EMULATOR_ENV as EMULATOR_ENV  # re-exported: its old home
from signet.kms.algorithms import (
    Algorithm,
    UnsupportedAlgorithmError,
    Verifier,
    get_algorithm,
    make_verifier,
)
from signet.kms.crc import crc32c
from signet.kms.errors import (
    KmsError,
    KmsIntegrityError,
    KmsQuotaExceeded,
    KmsUnavailable,
    KmsWrongAlgorithm,
    _error_from_rpc,
    _status_code,
)
from signet.kms.limiter import SignLimiter
from signet.kms.signer import KmsPublicKey

log = logging.getLogger(__name__)

USER_AGENT = f"signet/{__version__}"

T = TypeVar("T")

VERSION_NAME = re.compile(
    r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/[0-9]+"
)

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

# -- client factory --------------------------------------------------------------------


def create_client(
    emulator: str | None = None, *, user_agent: str = USER_AGENT
) -> KeyManagementServiceAsyncClient:
    """An async KMS client for the running event loop.

    With an emulator address (``signet run`` takes it from ``SIGNET_KMS_EMULATOR``, read
    once at startup, never here) it dials an insecure
    ``grpc.aio`` channel and sends no credentials; otherwise it uses Application Default
    Credentials against ``cloudkms.googleapis.com``. Must be called from the loop that will
    use it. Close with :func:`close_client`.
    """
    asyncio.get_running_loop()  # fail here, not on the first RPC, when misused
    info = ClientInfo(user_agent=user_agent)  # type: ignore[no-untyped-call]
    address = emulator or None
    if address is None:
        return KeyManagementServiceAsyncClient(client_info=info)
    channel = grpc.aio.insecure_channel(address, options=[("grpc.primary_user_agent", user_agent)])
    transport = KeyManagementServiceGrpcAsyncIOTransport(channel=channel, client_info=info)
    return KeyManagementServiceAsyncClient(transport=transport)


async def close_client(client: KeyManagementServiceAsyncClient) -> None:
    """Close the client's channel (on the loop that owns it)."""
    await client.transport.close()  # type: ignore[no-untyped-call]


# -- signer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable codes; ``deadline`` bounds a whole ``sign()`` call."""

    deadline: float = 30.0
    attempt_timeout: float = 10.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_integrity_retries: int = 2
    """Extra attempts after a checksum mismatch before raising KmsIntegrityError."""

    def backoff(self, retry_number: int) -> float:
        """Delay before retry ``retry_number`` (1-based): half fixed, half jitter."""
        growth = self.multiplier ** (retry_number - 1)
        ceiling = min(self.max_backoff, self.initial_backoff * growth)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class SignObservation:
    """What one ``sign()`` (or public key fetch) did; passed to the ``observe`` hook."""

    key_version: str
    method: str
    """``AsymmetricSign`` or ``GetPublicKey``."""
    outcome: str
    """``OK`` or the :attr:`KmsError.reason` raised."""
    seconds: float
    attempt_codes: tuple[str, ...] = field(default=())
    """Per RPC attempt: a gRPC code name, or ``INTEGRITY`` for a rejected response."""
    backend: str = "cloudkms"
    """Which signer made it (``cloudkms``, ``pkcs11``): the metrics' ``backend`` label."""

    @property
    def attempts(self) -> int:
        """Number of RPCs made."""
        return len(self.attempt_codes)


Observer = Callable[[SignObservation], None]


class _Retry(Exception):
    """Internal: this attempt failed in a way that may be retried."""

    def __init__(self, code: str, cause: str, integrity: bool, error: KmsError) -> None:
        super().__init__(cause)
        self.code = code
        self.integrity = integrity
        self.error = error


class CloudKmsSigner:
    """:class:`~signet.kms.signer.Signer` backed by a Cloud KMS (or emulator) key version.

    Safe for many concurrent ``sign()`` calls on the loop the client belongs to.
    ``limiter`` should be the process-wide :class:`SignLimiter`; when omitted the signer
    gets its own (32 concurrent, no rate limit). ``expected_algorithm`` pins the key's
    algorithm (a mismatch raises :class:`KmsWrongAlgorithm`). ``verify_signatures``
    checks each signature against the cached public key before returning it.
    """

    def __init__(
        self,
        client: KeyManagementServiceAsyncClient,
        key_version: str,
        *,
        limiter: SignLimiter | None = None,
        retry: RetryPolicy | None = None,
        expected_algorithm: str | None = None,
        verify_signatures: bool = True,
        observe: Observer | None = None,
    ) -> None:
        if not VERSION_NAME.fullmatch(key_version):
            raise ValueError(
                f"{key_version!r} is not a crypto key version name "
                "(projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N)"
            )
        self._client = client
        self._key_version = key_version
        self._limiter = limiter or SignLimiter()
        self._retry = retry or RetryPolicy()
        self._expected_algorithm = expected_algorithm
        self._verify = verify_signatures
        self._observe = observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._public: KmsPublicKey | None = None
        self._algorithm: Algorithm | None = None
        self._verifier: Verifier | None = None
        self._fetch: asyncio.Task[KmsPublicKey] | None = None

    @property
    def key_version(self) -> str:
        """Full resource name of the key version this signer uses."""
        return self._key_version

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                f"CloudKmsSigner for {self._key_version} is bound to another event loop; "
                "submit calls to that loop with asyncio.run_coroutine_threadsafe"
            )

    def _emit(self, method: str, outcome: str, start: float, codes: list[str]) -> None:
        if self._observe is None:
            return
        try:
            self._observe(
                SignObservation(
                    self._key_version, method, outcome, time.monotonic() - start, tuple(codes)
                )
            )
        except Exception:  # a metrics bug must not fail signing
            log.exception("KMS observe hook failed")

    # -- public key --------------------------------------------------------------------

    async def public_key(self) -> KmsPublicKey:
        """The key version's public key; fetched once, concurrent first calls share it."""
        self._bind_loop()
        if self._public is not None:
            return self._public
        if self._fetch is None:
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_public_key())
        return await asyncio.shield(self._fetch)

    async def _fetch_public_key(self) -> KmsPublicKey:
        start = time.monotonic()
        codes: list[str] = []
        try:
            result = await self._with_retries(
                "GetPublicKey", start, codes, self._get_public_key_once, limited=False
            )
        except KmsError as exc:
            self._fetch = None  # let a later call try again
            self._emit("GetPublicKey", exc.reason, start, codes)
            raise
        self._public = result
        self._emit("GetPublicKey", "OK", start, codes)
        return result

    async def _get_public_key_once(self, rpc_timeout: float) -> KmsPublicKey:
        kv = self._key_version
        resp = await self._client.get_public_key(
            request=kms.GetPublicKeyRequest(name=kv), retry=None, timeout=rpc_timeout
        )
        if resp.name != kv:
            raise KmsIntegrityError(kv, f"GetPublicKey answered for another resource {resp.name!r}")
        pem_crc = _as_int(resp.pem_crc32c)
        if pem_crc is None or crc32c(resp.pem.encode()) != pem_crc:
            err = KmsIntegrityError(kv, "public key PEM failed its CRC32C check")
            raise _Retry("INTEGRITY", err.cause, True, err)
        try:
            algorithm = get_algorithm(resp.algorithm.name)
        except UnsupportedAlgorithmError as exc:
            raise KmsWrongAlgorithm(kv, str(exc)) from None
        if self._expected_algorithm and algorithm.name != self._expected_algorithm:
            raise KmsWrongAlgorithm(
                kv, f"key uses {algorithm.name}, configured for {self._expected_algorithm}"
            )
        public_key = load_pem_public_key(resp.pem.encode())
        if not algorithm.matches_public_key(public_key):
            raise KmsWrongAlgorithm(
                kv, f"public key ({type(public_key).__name__}) does not fit {algorithm.name}"
            )
        self._algorithm = algorithm
        self._verifier = make_verifier(algorithm, public_key)
        return KmsPublicKey(kv, algorithm.name, public_key, resp.pem)

    # -- signing -----------------------------------------------------------------------

    async def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with exactly one successful AsymmetricSign (retries aside).

        EC/RSA: hashed locally, the digest is sent. Ed25519: the data is sent.
        Raises a :class:`KmsError` subclass on failure.
        """
        self._bind_loop()
        start = time.monotonic()
        codes: list[str] = []
        try:
            await self.public_key()
            algorithm = self._algorithm
            assert algorithm is not None  # set together with _public
            request = self._sign_request(algorithm, data)

            async def once(rpc_timeout: float) -> bytes:
                return await self._sign_once(request, data, rpc_timeout)

            signature = await self._with_retries("AsymmetricSign", start, codes, once, limited=True)
        except KmsError as exc:
            self._emit("AsymmetricSign", exc.reason, start, codes)
            raise
        self._emit("AsymmetricSign", "OK", start, codes)
        return signature

    def _sign_request(self, algorithm: Algorithm, data: bytes) -> kms.AsymmetricSignRequest:
        if algorithm.prehashed:
            digest = algorithm.digest(data)
            return kms.AsymmetricSignRequest(
                name=self._key_version,
                digest=kms.Digest(**{algorithm.digest_field: digest}),
                digest_crc32c=crc32c(digest),
            )
        return kms.AsymmetricSignRequest(
            name=self._key_version, data=data, data_crc32c=crc32c(data)
        )

    async def _sign_once(
        self, request: kms.AsymmetricSignRequest, data: bytes, rpc_timeout: float
    ) -> bytes:
        kv = self._key_version
        resp = await self._client.asymmetric_sign(request=request, retry=None, timeout=rpc_timeout)
        if resp.name != kv:
            raise KmsIntegrityError(kv, f"AsymmetricSign answered for {resp.name!r}")
        verified = resp.verified_data_crc32c if request.data else resp.verified_digest_crc32c
        problem = None
        if not verified:
            problem = "KMS did not confirm the request checksum"
        else:
            sig_crc = _as_int(resp.signature_crc32c)
            if sig_crc is None or crc32c(resp.signature) != sig_crc:
                problem = "signature failed its CRC32C check"
            elif (
                self._verifier is not None
                and self._verify
                and not self._verifier(resp.signature, data)
            ):
                problem = "signature does not verify with the key version's public key"
        if problem is not None:
            err = KmsIntegrityError(kv, problem)
            raise _Retry("INTEGRITY", problem, True, err)
        return bytes(resp.signature)

    # -- retry loop --------------------------------------------------------------------

    async def _with_retries(
        self,
        method: str,
        start: float,
        codes: list[str],
        attempt: Callable[[float], Awaitable[T]],
        *,
        limited: bool,
    ) -> T:
        """Run ``attempt`` (one RPC) until success, a permanent error or the deadline."""
        policy = self._retry
        deadline = start + policy.deadline
        kv = self._key_version
        retries = integrity_failures = 0
        last_cause = cause_code = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_error(method, codes, cause_code, last_cause)
            timeout = min(policy.attempt_timeout, remaining)
            try:
                if limited:
                    async with self._limiter.slot(deadline, kv):
                        timeout = min(policy.attempt_timeout, deadline - time.monotonic())
                        result = await attempt(max(timeout, 0.001))
                else:
                    result = await attempt(timeout)
                codes.append("OK")
                return result
            except GoogleAPICallError as exc:
                code = _status_code(exc)
                codes.append(code.name)
                if code not in RETRYABLE_CODES:
                    raise _error_from_rpc(kv, exc, len(codes), f"{method} failed: ") from None
                # An attempt cut short to fit our own deadline says nothing about KMS: the
                # error that made us retry (say RESOURCE_EXHAUSTED) stays the reason.
                cut_by_us = code is grpc.StatusCode.DEADLINE_EXCEEDED and (
                    timeout < policy.attempt_timeout
                )
                if not (cut_by_us and cause_code):
                    cause_code, last_cause = code.name, f"{code.name}: {exc.message}"
            except _Retry as exc:
                codes.append(exc.code)
                cause_code, last_cause = exc.code, str(exc)
                integrity_failures += 1
                if integrity_failures > policy.max_integrity_retries:
                    exc.error.attempts = len(codes)
                    raise exc.error from None
            except KmsError as exc:
                exc.attempts = max(len(codes), 1)
                raise
            retries += 1
            delay = policy.backoff(retries)
            if time.monotonic() + delay >= deadline:
                raise self._deadline_error(method, codes, cause_code, last_cause)
            await asyncio.sleep(delay)

    def _deadline_error(
        self, method: str, codes: list[str], cause_code: str, last_cause: str
    ) -> KmsError:
        """The error for a call out of time, classed by the failure that kept it retrying
        (``cause_code``), not by an attempt our own deadline cut short."""
        cls: type[KmsError] = KmsUnavailable
        if cause_code == grpc.StatusCode.RESOURCE_EXHAUSTED.name:
            cls = KmsQuotaExceeded
        elif cause_code == "INTEGRITY":
            cls = KmsIntegrityError
        last = cause_code or "none"  # every failed attempt leaves a cause_code
        return cls(
            self._key_version,
            f"{method} did not succeed within {self._retry.deadline:g}s deadline "
            f"after {len(codes)} attempt(s); last error {last_cause or last}",
            code=last,
            attempts=len(codes),
        )


def _as_int(value: object) -> int | None:
    """Int64Value wrappers surface as int (or None when unset) through proto-plus."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None

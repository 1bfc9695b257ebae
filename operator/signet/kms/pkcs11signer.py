"""The PKCS#11 (HSM) signing backend: one :class:`Pkcs11Signer` per key on a token.

It keeps the :class:`~signet.kms.signer.Signer` contract of the Cloud KMS backend, so
certificate construction, the one-signature-per-certificate ledger and the audit log do
not know which backend signed:

* ``key_version`` is the key's canonical ``pkcs11:`` URI (no PIN can be in it), which
  is what audit records, status messages and the signer cache name.
* Failures are the same typed :class:`~signet.kms.errors.KmsError` classes, transient
  (a lost session, a busy token: retried with the same backoff under one deadline) or
  not (token or object not found, PIN refused, wrong key type: raised at once).
* The algorithm is the KMS algorithm name of the key (``EC_SIGN_P256_SHA256``...): the
  token's key type and size fix it, except RSA padding, which the Issuer may choose.
* EC digests are computed here and the token signs the digest (``CKM_ECDSA``); its raw
  ``r || s`` is DER-encoded as X.509 and SSH builders expect. RSA and Ed25519 send the
  data (``CKM_SHA*_RSA_PKCS[_PSS]``, ``CKM_EDDSA``).
* Every signature is verified against the public key before it is returned, since a
  token that restarted underneath us could in principle answer for another handle.

python-pkcs11 is blocking C, so calls run on the module's bounded worker threads
(:mod:`signet.kms.pkcs11pool`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key

from signet.api.pkcs11uri import Pkcs11Key
from signet.kms import pkcs11pool
from signet.kms.algorithms import (
    Algorithm,
    UnsupportedAlgorithmError,
    Verifier,
    get_algorithm,
    make_verifier,
)
from signet.kms.algorithms import KeyType as AlgKeyType
from signet.kms.cloudkms import Observer, RetryPolicy, SignObservation
from signet.kms.errors import (
    KmsError,
    KmsIntegrityError,
    KmsKeyDisabled,
    KmsLoginFailed,
    KmsUnavailable,
    KmsWrongAlgorithm,
)
from signet.kms.limiter import SignLimiter
from signet.kms.signer import KmsPublicKey, PinSource

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKEND = "pkcs11"

_EC_ALGORITHMS = {"secp256r1": "EC_SIGN_P256_SHA256", "secp384r1": "EC_SIGN_P384_SHA384"}
_RSA_MECHANISMS = {
    ("PKCS1V15", "sha256"): Mechanism.SHA256_RSA_PKCS,
    ("PKCS1V15", "sha512"): Mechanism.SHA512_RSA_PKCS,
    ("PSS", "sha256"): Mechanism.SHA256_RSA_PKCS_PSS,
}
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")
"""CKA_EC_PARAMS of an Ed25519 key: the RFC 8410 OID, or the curve name older tokens use."""
_PSS_PARAMS = {"sha256": (Mechanism.SHA256, MGF.SHA256, 32)}


class Pkcs11Signer:
    """:class:`~signet.kms.signer.Signer` backed by a private key on a PKCS#11 token.

    ``pin_source`` is awaited only when the token needs a login (the first call, after a
    token restart, after a refused PIN), so a rotated PIN Secret is picked up without a
    restart. ``limiter`` should be the process-wide :class:`SignLimiter`.
    """

    def __init__(
        self,
        key: Pkcs11Key,
        pin_source: PinSource,
        *,
        limiter: SignLimiter | None = None,
        retry: RetryPolicy | None = None,
        observe: Observer | None = None,
        max_sessions: int = pkcs11pool.DEFAULT_MAX_SESSIONS,
    ) -> None:
        self._key = key
        self._key_version = key.uri.canonical
        self._pin_source = pin_source
        self._limiter = limiter or SignLimiter()
        self._retry = retry or RetryPolicy()
        self._observe = observe
        self._max_sessions = max_sessions
        self._pool: pkcs11pool.TokenPool | None = None
        self._public: KmsPublicKey | None = None
        self._algorithm: Algorithm | None = None
        self._verifier: Verifier | None = None
        self._fetch: asyncio.Task[KmsPublicKey] | None = None
        self._pin_proven = False

    @property
    def key_version(self) -> str:
        """The key's canonical ``pkcs11:`` URI."""
        return self._key_version

    @property
    def pool(self) -> pkcs11pool.TokenPool | None:
        """The token's session pool, once the token has been found."""
        return self._pool

    def _emit(self, method: str, outcome: str, start: float, codes: list[str]) -> None:
        if self._observe is None:
            return
        observation = SignObservation(
            self._key_version, method, outcome, time.monotonic() - start, tuple(codes), BACKEND
        )
        try:
            self._observe(observation)
        except Exception:  # a metrics bug must not fail signing
            log.exception("KMS observe hook failed")

    # -- public key --------------------------------------------------------------------

    async def public_key(self) -> KmsPublicKey:
        """The key's public key and algorithm; read once, concurrent first calls share it."""
        if self._public is not None:
            return self._public
        if self._fetch is None:
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_public_key())
        return await asyncio.shield(self._fetch)

    async def _fetch_public_key(self) -> KmsPublicKey:
        start = time.monotonic()
        codes: list[str] = []
        try:
            result = await self._with_retries("GetPublicKey", start, codes, self._read_key, False)
        except KmsError as exc:
            self._fetch = None  # let a later call try again
            self._emit("GetPublicKey", exc.reason, start, codes)
            raise
        self._public = result
        self._emit("GetPublicKey", "OK", start, codes)
        return result

    def _read_key(self, borrowed: pkcs11pool.Borrowed) -> KmsPublicKey:
        kv = self._key_version
        private = _private_key(borrowed, self._key)
        if not private[Attribute.SIGN]:
            raise KmsKeyDisabled(kv, f"{self._key.uri.object_description}: CKA_SIGN is false")
        uri = self._key.uri
        public_object = borrowed.session.get_key(
            object_class=ObjectClass.PUBLIC_KEY, label=uri.object, id=uri.id
        )
        public_key = _public_key(kv, private.key_type, public_object)
        algorithm = self._choose_algorithm(public_key)
        self._algorithm = algorithm
        self._verifier = make_verifier(algorithm, public_key)
        pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        return KmsPublicKey(kv, algorithm.name, public_key, pem)

    def _choose_algorithm(self, public_key: PublicKeyTypes) -> Algorithm:
        kv, wanted = self._key_version, self._key.algorithm
        default: str | None
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            default = "EC_SIGN_ED25519"
        elif isinstance(public_key, rsa.RSAPublicKey):
            default = f"RSA_SIGN_PKCS1_{public_key.key_size}_SHA256"
        else:
            default = _EC_ALGORITHMS.get(getattr(getattr(public_key, "curve", None), "name", ""))
        name = wanted or default
        if name is None:
            raise KmsWrongAlgorithm(kv, f"unsupported key type {type(public_key).__name__}")
        try:
            algorithm = get_algorithm(name)
        except UnsupportedAlgorithmError as exc:
            raise KmsWrongAlgorithm(kv, str(exc)) from None
        if not algorithm.matches_public_key(public_key) or (
            algorithm.key_type is AlgKeyType.RSA
            and (algorithm.padding.value, algorithm.hash_name) not in _RSA_MECHANISMS
        ):
            raise KmsWrongAlgorithm(
                kv,
                f"the key is {_describe_key(public_key)}; spec.kms.pkcs11.algorithm "
                f"{name} does not fit it",
            )
        return algorithm

    # -- signing -----------------------------------------------------------------------

    async def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with one successful ``C_Sign`` (retries of failed ones aside)."""
        start = time.monotonic()
        codes: list[str] = []
        try:
            await self.public_key()
            algorithm = self._algorithm
            assert algorithm is not None  # set together with _public

            def once(borrowed: pkcs11pool.Borrowed) -> bytes:
                return self._sign_once(borrowed, algorithm, data)

            async def check(signature: bytes) -> None:
                await self._check(signature, data)

            signature = await self._with_retries("AsymmetricSign", start, codes, once, True, check)
        except KmsError as exc:
            self._emit("AsymmetricSign", exc.reason, start, codes)
            raise
        self._emit("AsymmetricSign", "OK", start, codes)
        return signature

    def _sign_once(self, borrowed: pkcs11pool.Borrowed, algorithm: Algorithm, data: bytes) -> bytes:
        private = _private_key(borrowed, self._key)
        if algorithm.key_type is AlgKeyType.EC:
            raw = private.sign(algorithm.digest(data), mechanism=Mechanism.ECDSA)
            half = len(raw) // 2
            signature = encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
        elif algorithm.key_type is AlgKeyType.RSA:
            hash_name = algorithm.hash_name or ""
            mechanism = _RSA_MECHANISMS[(algorithm.padding.value, hash_name)]
            param = _PSS_PARAMS.get(hash_name) if algorithm.padding.value == "PSS" else None
            signature = private.sign(data, mechanism=mechanism, mechanism_param=param)
        else:
            signature = private.sign(data, mechanism=Mechanism.EDDSA)
        return bytes(signature)

    async def _check(self, signature: bytes, data: bytes) -> None:
        """Verify on the event loop, as the Cloud KMS signer does, not on the module's one
        worker thread: verifying costs about as much as a SoftHSM2 signature, and the
        token keeps signing (``C_Sign`` runs without the GIL) while the loop checks the
        previous one."""
        verifier = self._verifier
        if verifier is not None and not verifier(signature, data):
            raise KmsIntegrityError(
                self._key_version, "signature does not verify with the key's public key"
            )

    # -- the retry loop ----------------------------------------------------------------

    async def _get_pool(self) -> pkcs11pool.TokenPool:
        if self._pool is None:
            key, kv = self._key, self._key_version
            module = pkcs11pool.load_module(kv, key.module, self._max_sessions)
            future = pkcs11pool.run_in(module, lambda: module.pool(kv, key.uri))
            self._pool = await asyncio.wrap_future(future)
        return self._pool

    async def _attempt(self, work: Callable[[pkcs11pool.Borrowed], T]) -> T:
        """One call on a pooled session. The first call of each signer (and any that
        finds the token logged out) reads this issuer's PIN: the token may already be
        logged in for another issuer, and this one must still prove it knows the PIN."""
        pool = await self._get_pool()
        for _ in range(3):
            pin = None
            if not self._pin_proven or pool.needs_pin:
                pin = await self._pin_source()
                if pool.logged_in and not pool.accepts(pin):
                    raise self._pin_mismatch()
                if not pool.logged_in:
                    pool.set_pin(pin)

            def run() -> T:
                with pool.session(self._key_version) as borrowed:
                    return work(borrowed)

            try:
                result = await asyncio.wrap_future(pkcs11pool.run_in(pool.module, run))
            except pkcs11pool.NeedPin:
                continue  # the PIN was forgotten (refused elsewhere) meanwhile: read it again
            if pin is not None:
                if not pool.accepts(pin):  # another issuer's PIN won the login race
                    raise self._pin_mismatch()
                self._pin_proven = True
            return result
        raise KmsUnavailable(self._key_version, "no PIN to log in with")

    def _pin_mismatch(self) -> KmsLoginFailed:
        return KmsLoginFailed(
            self._key_version,
            "the PIN differs from the one this process logged in to the token with",
            code="PinIncorrect",
        )

    async def _with_retries(
        self,
        method: str,
        start: float,
        codes: list[str],
        work: Callable[[pkcs11pool.Borrowed], T],
        limited: bool,
        check: Callable[[T], Awaitable[None]] | None = None,
    ) -> T:
        """Run ``work`` on a pooled session until success, a permanent error or the
        deadline; a lost session recovers the module before the next attempt."""
        policy, kv = self._retry, self._key_version
        deadline = start + policy.deadline
        retries = integrity_failures = 0
        last_cause = ""
        while True:
            try:
                if limited:
                    async with self._limiter.slot(deadline, kv):
                        result = await self._attempt(work)
                else:
                    result = await self._attempt(work)
                if check is not None:
                    await check(result)
                codes.append("OK")
                return result
            except pkcs11pool.SessionsLost as lost:
                codes.append(str(lost))
                last_cause = f"{lost}: the token's sessions were lost"
                module = self._pool.module if self._pool is not None else None
                if module is not None:
                    await asyncio.wrap_future(
                        pkcs11pool.run_in(
                            module, functools.partial(module.recover, lost.generation)
                        )
                    )
            except KmsIntegrityError as exc:
                codes.append("INTEGRITY")
                integrity_failures += 1
                if integrity_failures > policy.max_integrity_retries:
                    exc.attempts = len(codes)
                    raise
                last_cause = exc.cause
            except KmsUnavailable as exc:
                codes.append(exc.code or "UNAVAILABLE")
                last_cause = exc.cause
            except KmsError as exc:
                codes.append(exc.code or exc.reason)
                exc.attempts = len(codes)
                raise
            except p11e.PKCS11Error as error:  # not mapped inside the session: map it here
                mapped = pkcs11pool.map_error(kv, error, method)
                codes.append(mapped.code or mapped.reason)
                if not isinstance(mapped, KmsUnavailable):
                    mapped.attempts = len(codes)
                    raise mapped from None
                last_cause = mapped.cause
            retries += 1
            delay = policy.backoff(retries)
            if time.monotonic() + delay >= deadline:
                raise KmsUnavailable(
                    kv,
                    f"{method} did not succeed within {policy.deadline:g}s after "
                    f"{len(codes)} attempt(s); last error {last_cause}",
                    code=codes[-1] if codes else None,
                    attempts=len(codes),
                )
            await asyncio.sleep(delay)


def _private_key(borrowed: pkcs11pool.Borrowed, key: Pkcs11Key) -> Any:
    """The session's handle of the private key, looked up once per session (the cache is
    the session's, shared by every key of the token, hence keyed by URI)."""
    uri = key.uri
    found = borrowed.objects.get(uri.canonical)
    if found is None:
        try:
            found = borrowed.session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, label=uri.object, id=uri.id
            )
        except p11e.NoSuchKey:
            if uri.canonical in borrowed.known:  # it was there: our login is what is gone
                raise p11e.UserNotLoggedIn("a key found earlier is invisible") from None
            raise p11e.NoSuchKey(f"no private key {uri.object_description}") from None
        borrowed.objects[uri.canonical] = found
        borrowed.known.add(uri.canonical)
    return found


def _public_key(kv: str, key_type: Any, public_object: Any) -> PublicKeyTypes:
    """The public key as ``cryptography`` sees it, from the token's public key object."""
    try:
        if key_type == KeyType.RSA:
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(public_object[Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public_object[Attribute.MODULUS], "big"),
            )
            return numbers.public_key()
        if (
            key_type in (KeyType.EC, KeyType.EC_EDWARDS)
            and bytes(public_object[Attribute.EC_PARAMS]) in _ED25519_PARAMS
        ):
            point = bytes(public_object[Attribute.EC_POINT])
            if len(point) == 34 and point[:2] == b"\x04\x20":  # most wrap it in an OCTET STRING
                point = point[2:]
            return ed25519.Ed25519PublicKey.from_public_bytes(point)
        if key_type == KeyType.EC:
            return load_der_public_key(encode_ec_public_key(public_object))
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise KmsWrongAlgorithm(kv, f"the token's public key could not be read: {error}") from None
    raise KmsWrongAlgorithm(kv, f"key type {getattr(key_type, 'name', key_type)} cannot sign here")


def _describe_key(public_key: PublicKeyTypes) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return f"EC {getattr(getattr(public_key, 'curve', None), 'name', '?')}"

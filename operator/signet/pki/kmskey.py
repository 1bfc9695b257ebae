"""Private-key objects whose signatures come from Cloud KMS.

``cryptography``'s certificate builders (``x509.CertificateBuilder.sign``,
``SSHCertificateBuilder.sign``) accept any instance of the private-key ABCs and only call
``public_key()`` and ``sign()`` on it, so a subclass that forwards ``sign()`` to KMS lets
us reuse the library's DER and OpenSSH encoders instead of assembling certificates by
hand. Everything that would need the private key material (serialization, key exchange,
decryption, private numbers) raises :class:`KeyNotExportableError`: the key lives in KMS
and these objects only borrow its signing operation.

The builders are synchronous while :class:`~signet.kms.signer.Signer` is asynchronous.
:func:`sign_in_thread` bridges the two: it runs the builder in a worker thread and the
adapter's ``sign()`` hands the KMS call back to the caller's event loop.

Each adapter is single use. A certificate needs exactly one signature, and one KMS
AsymmetricSign call is billed, rate limited and audit logged, so a second ``sign()`` on
the same adapter is refused before it reaches KMS rather than silently doubling calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.utils import Buffer

from signet.kms.algorithms import Algorithm, KeyType, Padding, get_algorithm
from signet.kms.signer import KmsPublicKey, Signer

__all__ = [
    "DEFAULT_SIGN_TIMEOUT",
    "KeyNotExportableError",
    "KmsEcPrivateKey",
    "KmsEd25519PrivateKey",
    "KmsPrivateKey",
    "KmsRsaPrivateKey",
    "KmsSignatureMismatchError",
    "SignCallback",
    "SignatureSpentError",
    "kms_private_key",
    "sign_certificate",
    "sign_in_thread",
]

SignCallback = Callable[[bytes], bytes]
"""Synchronous ``callback(data) -> signature``; ``data`` is what is signed, not a digest."""

DEFAULT_SIGN_TIMEOUT = 30.0
"""Seconds the builder thread waits for KMS before giving up on a signature."""

T = TypeVar("T")


class KeyNotExportableError(TypeError):
    """Raised for any operation that would need the KMS-held private key material."""


class KmsSignatureMismatchError(ValueError):
    """A builder asked for a signature scheme the KMS key version cannot produce."""


class SignatureSpentError(RuntimeError):
    """KMS returned a signature, then the builder failed: the signature is spent (billed,
    in KMS's audit log and in ours) without a certificate to show for it."""

    def __init__(self, key_version: str, cause: BaseException) -> None:
        super().__init__(
            f"signature from {key_version} spent, then building failed: "
            f"{type(cause).__name__}: {cause}"
        )
        self.key_version = key_version
        self.signature: str | None = None
        """The audit id of the spent signature's record, when the caller keeps one."""


class _KmsKey:
    """What the three adapters share: the KMS key, the one-shot signature, the refusals.

    It comes first in each adapter's bases so its methods satisfy the ABCs' abstract
    serialization and copy methods with a refusal.
    """

    _key_type: KeyType

    def __init__(self, kms_key: KmsPublicKey, callback: SignCallback) -> None:
        algorithm = get_algorithm(kms_key.algorithm)
        if algorithm.key_type is not self._key_type or not algorithm.matches_public_key(
            kms_key.public_key
        ):
            raise KmsSignatureMismatchError(
                f"{type(self).__name__} cannot hold a {algorithm.name} key with a "
                f"{type(kms_key.public_key).__name__}"
            )
        self._algorithm = algorithm
        self._key_version = kms_key.key_version
        self._kms_public_key: PublicKeyTypes = kms_key.public_key
        self._callback = callback
        self._lock = threading.Lock()
        self._sign_count = 0

    @property
    def algorithm(self) -> Algorithm:
        """The KMS algorithm of the key version this adapter signs with."""
        return self._algorithm

    @property
    def key_version(self) -> str:
        """Full resource name of the KMS key version."""
        return self._key_version

    @property
    def sign_count(self) -> int:
        """Signatures produced so far (0 or 1)."""
        return self._sign_count

    def _sign_once(self, data: Buffer) -> bytes:
        with self._lock:
            if self._sign_count:
                raise RuntimeError(
                    f"KMS key adapter for {self._key_version} was asked for a second "
                    "signature; adapters are single use (one KMS call per certificate)"
                )
            self._sign_count = 1
        return self._callback(bytes(data))

    def _refuse(self, operation: str) -> NoReturn:
        raise KeyNotExportableError(
            f"{operation} is not available: the {self._algorithm.name} private key is held "
            "in Cloud KMS and can only sign"
        )

    def private_bytes(self, *args: object, **kwargs: object) -> NoReturn:
        self._refuse("private_bytes()")

    def private_numbers(self) -> NoReturn:
        self._refuse("private_numbers()")

    def __copy__(self) -> NoReturn:
        self._refuse("copying")

    def __deepcopy__(self, memo: dict[int, object]) -> NoReturn:
        self._refuse("copying")


class KmsEcPrivateKey(_KmsKey, ec.EllipticCurvePrivateKey):
    """An ECDSA key in KMS (``EC_SIGN_P256_SHA256``, ``EC_SIGN_P384_SHA384``)."""

    _key_type = KeyType.EC

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Sign ``data`` with KMS; the requested hash must be the one KMS uses for this key."""
        wanted = self._algorithm.hash_algorithm()
        if (
            not isinstance(signature_algorithm, ec.ECDSA)
            or isinstance(signature_algorithm.algorithm, asym_utils.Prehashed)
            or signature_algorithm.algorithm != wanted
        ):
            raise KmsSignatureMismatchError(
                f"{self._algorithm.name} signs ECDSA with {wanted.name} over the data; "
                f"the builder asked for {_describe(signature_algorithm)}"
            )
        return self._sign_once(data)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        assert isinstance(self._kms_public_key, ec.EllipticCurvePublicKey)
        return self._kms_public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self.public_key().curve

    @property
    def key_size(self) -> int:
        return self.public_key().key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> NoReturn:
        self._refuse("ECDH key exchange")


class KmsRsaPrivateKey(_KmsKey, rsa.RSAPrivateKey):
    """An RSA key in KMS, PKCS#1 v1.5 or PSS (salt = digest length, MGF1 = same hash)."""

    _key_type = KeyType.RSA

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: asym_utils.Prehashed | hashes.HashAlgorithm | asym_utils.NoDigestInfo,
    ) -> bytes:
        """Sign ``data`` with KMS; padding and hash must be exactly what the key version does.

        A PSS key version asked for PKCS#1 v1.5 (or the other way round) would return a
        signature that does not verify under the algorithm written into the certificate,
        so the mismatch is an error here rather than a broken certificate later.
        """
        alg = self._algorithm
        wanted_hash = alg.hash_algorithm()
        if (
            not isinstance(algorithm, hashes.HashAlgorithm)
            or algorithm != wanted_hash
            or padding != alg.rsa_padding()
        ):
            raise KmsSignatureMismatchError(
                f"{alg.name} signs RSA {alg.padding.value} with {wanted_hash.name}"
                + (f" (salt {wanted_hash.digest_size})" if alg.padding is Padding.PSS else "")
                + f"; the builder asked for {_describe(padding)} with {_describe(algorithm)}"
            )
        return self._sign_once(data)

    def public_key(self) -> rsa.RSAPublicKey:
        assert isinstance(self._kms_public_key, rsa.RSAPublicKey)
        return self._kms_public_key

    @property
    def key_size(self) -> int:
        return self.public_key().key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> NoReturn:
        self._refuse("decrypt()")


class KmsEd25519PrivateKey(_KmsKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in KMS (``EC_SIGN_ED25519``); KMS signs the data itself."""

    _key_type = KeyType.ED25519

    def sign(self, data: Buffer) -> bytes:
        """Sign ``data`` with KMS (pure Ed25519, no prehash)."""
        return self._sign_once(data)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        assert isinstance(self._kms_public_key, ed25519.Ed25519PublicKey)
        return self._kms_public_key

    def private_bytes_raw(self) -> NoReturn:
        self._refuse("private_bytes_raw()")


KmsPrivateKey = KmsEcPrivateKey | KmsRsaPrivateKey | KmsEd25519PrivateKey
"""Any of the adapters; each is a real ``cryptography`` private-key ABC instance."""


def _describe(obj: object) -> str:
    """Name a padding, hash or signature algorithm for an error message."""
    if isinstance(obj, padding.PKCS1v15):
        return "PKCS1v15"
    if isinstance(obj, padding.PSS):
        salt = obj._salt_length
        return f"PSS (salt {salt if isinstance(salt, int) else type(salt).__name__.strip('_')})"
    if isinstance(obj, ec.ECDSA):
        return f"ECDSA with {_describe(obj.algorithm)}"
    if isinstance(obj, asym_utils.Prehashed):
        return "a prehashed digest"
    if isinstance(obj, hashes.HashAlgorithm):
        return obj.name
    return type(obj).__name__


def kms_private_key(kms_key: KmsPublicKey, callback: SignCallback) -> KmsPrivateKey:
    """Return a single-use adapter of the right ABC for ``kms_key.algorithm``.

    ``callback`` is called (at most once) with the exact bytes to be signed and must
    return the signature in the encoding KMS returns: DER ``ECDSA-Sig-Value`` for EC, the
    raw signature for RSA and Ed25519, which is also what ``cryptography`` expects from
    ``sign()``.
    """
    key_type = get_algorithm(kms_key.algorithm).key_type
    if key_type is KeyType.EC:
        return KmsEcPrivateKey(kms_key, callback)
    if key_type is KeyType.RSA:
        return KmsRsaPrivateKey(kms_key, callback)
    return KmsEd25519PrivateKey(kms_key, callback)


def sign_certificate(builder: x509.CertificateBuilder, key: KmsPrivateKey) -> x509.Certificate:
    """``builder.sign`` with the hash and padding that match the KMS algorithm.

    The signature algorithm written into the certificate is derived from these arguments,
    so deriving them from the key's algorithm (never from a caller's choice) is what
    keeps e.g. ``RSA_SIGN_PSS_2048_SHA256`` certificates labelled rsassaPss, SHA-256,
    MGF1-SHA-256, salt 32.
    """
    alg = key.algorithm
    if alg.key_type is KeyType.ED25519:
        return builder.sign(key, None)
    if alg.key_type is KeyType.RSA and alg.padding is Padding.PSS:
        rsa_padding = alg.rsa_padding()
        assert isinstance(rsa_padding, padding.PSS)
        return builder.sign(key, alg.hash_algorithm(), rsa_padding=rsa_padding)
    return builder.sign(key, alg.hash_algorithm())


async def sign_in_thread(
    signer: Signer,
    build: Callable[[KmsPrivateKey], T],
    *,
    sign_timeout: float = DEFAULT_SIGN_TIMEOUT,
    on_signed: Callable[[], object] | None = None,
) -> T:
    """Run the synchronous ``build(key)`` in a worker thread, signing through ``signer``.

    ``on_signed`` runs in that thread the moment KMS returns the signature, before the
    builder goes on: the one point after which the signature exists whatever happens next
    (a builder error, a crash), so the place to write its audit record.

    ``build`` receives a fresh single-use adapter; whatever it returns is returned. The
    adapter's ``sign()`` submits ``signer.sign(data)`` to the running event loop and
    blocks the worker thread (never the loop) until KMS answers or ``sign_timeout`` seconds
    pass. Exactly one signature per call is enforced: a second ``sign()`` raises inside
    the builder, and a builder that returns without signing is reported as an error.
    """
    kms_key = await signer.public_key()
    loop = asyncio.get_running_loop()
    signed = threading.Event()

    def callback(data: bytes) -> bytes:
        future = asyncio.run_coroutine_threadsafe(signer.sign(data), loop)
        try:
            signature = future.result(sign_timeout)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the signer itself raised TimeoutError: report it as it is
            future.cancel()
            raise TimeoutError(
                f"KMS did not sign with {signer.key_version} within {sign_timeout:g}s"
            ) from None
        signed.set()
        if on_signed is not None:
            on_signed()
        return signature

    key = kms_private_key(kms_key, callback)
    try:
        result = await asyncio.to_thread(build, key)
    except Exception as error:
        if signed.is_set():
            raise SignatureSpentError(signer.key_version, error) from error
        raise
    if key.sign_count != 1:
        raise RuntimeError(
            f"certificate builder returned without signing with {signer.key_version}"
        )
    return result

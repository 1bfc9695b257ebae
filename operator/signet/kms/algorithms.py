"""The one table of KMS signing algorithms Signet supports.

The emulator (to generate keys and sign), the Cloud KMS signer (to hash locally and pick
the ``Digest`` field) and certificate construction (to pick the X.509 signature algorithm)
all read the same :data:`ALGORITHMS` entries, so a new algorithm is added in one place and
the three can never disagree about, say, the PSS salt length.

Cloud KMS fixes the PSS salt length to the digest length and MGF1 to the same hash; those
rules are encoded here rather than repeated by callers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, PSS, PKCS1v15
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed


class KeyType(Enum):
    """Key family; decides which ``cryptography`` key class and sign call apply."""

    EC = "EC"
    RSA = "RSA"
    ED25519 = "ED25519"


class Padding(Enum):
    """RSA signature padding scheme (``NONE`` for EC and Ed25519)."""

    NONE = "NONE"
    PKCS1V15 = "PKCS1V15"
    PSS = "PSS"


HashType = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
"""The hash classes KMS signing algorithms use (narrow, so ``builder.sign`` accepts it)."""

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""Private key types the emulator can hold (never seen outside the emulator)."""


@dataclass(frozen=True)
class Algorithm:
    """Everything needed to generate, sign and verify for one KMS algorithm."""

    name: str
    """KMS ``CryptoKeyVersionAlgorithm`` enum name, e.g. ``EC_SIGN_P256_SHA256``."""
    key_type: KeyType
    curve: str | None
    """Curve name for EC/Ed25519 (``secp256r1``, ``secp384r1``, ``ed25519``)."""
    key_size: int
    """Key size in bits (curve order size for EC, modulus size for RSA, 256 for Ed25519)."""
    hash_name: str | None
    """``sha256``/``sha384``/``sha512``, or ``None`` for Ed25519 (signs the data itself).
    Doubles as the field name in the KMS ``Digest`` message."""
    padding: Padding

    @property
    def prehashed(self) -> bool:
        """True when KMS takes a digest (EC, RSA); False when it takes the data (Ed25519)."""
        return self.hash_name is not None

    @property
    def digest_field(self) -> str:
        """Name of the ``Digest`` oneof member to fill; raises for Ed25519."""
        if self.hash_name is None:
            raise ValueError(f"{self.name} signs raw data; it has no digest field")
        return self.hash_name

    @property
    def digest_size(self) -> int:
        """Digest length in bytes; the emulator rejects digests of any other length."""
        return self.hash_algorithm().digest_size

    def hash_algorithm(self) -> HashType:
        """A fresh ``cryptography`` hash instance (they are cheap and stateless)."""
        if self.hash_name is None:
            raise ValueError(f"{self.name} has no separate hash")
        return _HASHES[self.hash_name]()

    def digest(self, data: bytes) -> bytes:
        """Hash ``data`` the way KMS expects it for this algorithm."""
        return hashlib.new(self.digest_field, data).digest()

    def rsa_padding(self) -> PKCS1v15 | PSS:
        """The padding object for RSA; PSS uses MGF1 with the same hash, salt = digest len."""
        if self.padding is Padding.PKCS1V15:
            return PKCS1v15()
        if self.padding is Padding.PSS:
            hash_alg = self.hash_algorithm()
            return PSS(mgf=MGF1(hash_alg), salt_length=hash_alg.digest_size)
        raise ValueError(f"{self.name} is not an RSA algorithm")

    def generate_private_key(self) -> SigningKey:
        """Create a fresh private key of the right type (emulator only)."""
        if self.key_type is KeyType.EC:
            return ec.generate_private_key(_CURVES[self.curve or ""]())
        if self.key_type is KeyType.RSA:
            return rsa.generate_private_key(public_exponent=65537, key_size=self.key_size)
        return ed25519.Ed25519PrivateKey.generate()

    def sign_prepared(self, key: SigningKey, payload: bytes) -> bytes:
        """Sign what KMS receives: the digest for EC/RSA, the data for Ed25519."""
        if isinstance(key, ec.EllipticCurvePrivateKey) and self.key_type is KeyType.EC:
            return key.sign(payload, ec.ECDSA(Prehashed(self.hash_algorithm())))
        if isinstance(key, rsa.RSAPrivateKey) and self.key_type is KeyType.RSA:
            return key.sign(payload, self.rsa_padding(), Prehashed(self.hash_algorithm()))
        if isinstance(key, ed25519.Ed25519PrivateKey) and self.key_type is KeyType.ED25519:
            return key.sign(payload)
        raise TypeError(f"key of type {type(key).__name__} does not match {self.name}")

    def matches_public_key(self, public_key: PublicKeyTypes) -> bool:
        """True when ``public_key`` has the type, curve and size this algorithm implies."""
        if self.key_type is KeyType.EC:
            return (
                isinstance(public_key, ec.EllipticCurvePublicKey)
                and public_key.curve.name == self.curve
            )
        if self.key_type is KeyType.RSA:
            return isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == self.key_size
        return isinstance(public_key, ed25519.Ed25519PublicKey)

    def verify(self, public_key: PublicKeyTypes, signature: bytes, data: bytes) -> None:
        """Verify ``signature`` over the original ``data``.

        Raises ``cryptography.exceptions.InvalidSignature`` when it does not verify and
        ``TypeError`` when the key does not belong to this algorithm.
        """
        if not self.matches_public_key(public_key):
            raise TypeError(f"public key {type(public_key).__name__} does not match {self.name}")
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(self.hash_algorithm()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, self.rsa_padding(), self.hash_algorithm())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)


_HASHES: Mapping[str, Callable[[], HashType]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_CURVES: Mapping[str, Callable[[], ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
}


def _alg(
    name: str, key_type: KeyType, curve: str | None, size: int, hash_name: str | None, pad: Padding
) -> tuple[str, Algorithm]:
    return name, Algorithm(name, key_type, curve, size, hash_name, pad)


ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    dict(
        [
            _alg("EC_SIGN_P256_SHA256", KeyType.EC, "secp256r1", 256, "sha256", Padding.NONE),
            _alg("EC_SIGN_P384_SHA384", KeyType.EC, "secp384r1", 384, "sha384", Padding.NONE),
            _alg("RSA_SIGN_PKCS1_2048_SHA256", KeyType.RSA, None, 2048, "sha256", Padding.PKCS1V15),
            _alg("RSA_SIGN_PKCS1_3072_SHA256", KeyType.RSA, None, 3072, "sha256", Padding.PKCS1V15),
            _alg("RSA_SIGN_PKCS1_4096_SHA256", KeyType.RSA, None, 4096, "sha256", Padding.PKCS1V15),
            _alg("RSA_SIGN_PKCS1_4096_SHA512", KeyType.RSA, None, 4096, "sha512", Padding.PKCS1V15),
            _alg("RSA_SIGN_PSS_2048_SHA256", KeyType.RSA, None, 2048, "sha256", Padding.PSS),
            _alg("RSA_SIGN_PSS_3072_SHA256", KeyType.RSA, None, 3072, "sha256", Padding.PSS),
            _alg("RSA_SIGN_PSS_4096_SHA256", KeyType.RSA, None, 4096, "sha256", Padding.PSS),
            _alg("EC_SIGN_ED25519", KeyType.ED25519, "ed25519", 256, None, Padding.NONE),
        ]
    )
)
"""Supported algorithms keyed by KMS enum name; read-only."""


class UnsupportedAlgorithmError(ValueError):
    """The KMS algorithm name is not in :data:`ALGORITHMS`."""


def get_algorithm(name: str) -> Algorithm:
    """Look up an algorithm by KMS name, with an error that lists what is supported."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        supported = ", ".join(ALGORITHMS)
        raise UnsupportedAlgorithmError(
            f"unsupported KMS algorithm {name!r}; supported: {supported}"
        ) from None


Verifier = Callable[[bytes, bytes], bool]
"""``verifier(signature, data) -> bool``."""


def make_verifier(algorithm: str | Algorithm, public_key: PublicKeyTypes) -> Verifier:
    """Return a callable that checks signatures over original data for one public key.

    Binding the key and algorithm once lets tests and the signer's sanity check call it
    per signature without repeating the lookup; a key that does not fit the algorithm is
    rejected here, up front, rather than on every call.
    """
    alg = algorithm if isinstance(algorithm, Algorithm) else get_algorithm(algorithm)
    if not alg.matches_public_key(public_key):
        raise TypeError(f"public key {type(public_key).__name__} does not match {alg.name}")

    def verify(signature: bytes, data: bytes) -> bool:
        try:
            alg.verify(public_key, signature, data)
        except InvalidSignature:
            return False
        return True

    return verify

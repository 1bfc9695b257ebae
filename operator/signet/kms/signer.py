"""The contract between certificate construction and whatever holds the CA key.

The CA private key never leaves the KMS, so the rest of Signet only ever sees a public key
and a way to get a signature over some bytes. Keeping that contract this small is what lets
``pki`` stay free of gRPC and lets tests swap the endpoint (emulator or Cloud KMS) without
swapping the code path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


@dataclass(frozen=True)
class KmsPublicKey:
    """What KMS tells us about a key version: enough to build and verify certificates."""

    key_version: str
    """Full resource name: projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N."""
    algorithm: str
    """KMS algorithm name, e.g. ``EC_SIGN_P256_SHA256`` (see ``signet.kms.algorithms``)."""
    public_key: PublicKeyTypes
    pem: str


class Signer(Protocol):
    """One KMS key version that can sign.

    ``sign`` receives the exact bytes to be signed (a TBSCertificate, an SSH certificate
    body); the implementation hashes locally with the key version's digest and sends only
    the digest (Ed25519 sends the data), so exactly one AsymmetricSign call is made per
    signature.
    """

    @property
    def key_version(self) -> str: ...

    async def public_key(self) -> KmsPublicKey: ...

    async def sign(self, data: bytes) -> bytes: ...


PinSource = Callable[[], Awaitable[str]]
"""Reads a PKCS#11 token's user PIN (from a Secret or a file) when a login needs it. Here,
not with the PKCS#11 signer, so that naming it does not load python-pkcs11."""

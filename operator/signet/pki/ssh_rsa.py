"""OpenSSH certificates signed by an RSA CA key, with the hash the KMS key dictates.

``SSHCertificateBuilder`` always signs with ``rsa-sha2-512`` when the CA key is RSA, but
a Cloud KMS key version has one fixed hash (``RSA_SIGN_PKCS1_*_SHA256`` cannot produce a
SHA-512 signature), so RSA CA certificates are encoded here instead. The format is the
one in OpenSSH's PROTOCOL.certkeys::

    string    "<key type>-cert-v01@openssh.com"
    string    nonce
    ...       public key fields of the certified key (as in its public key blob)
    uint64    serial
    uint32    type                  (1 = user, 2 = host)
    string    key id
    string    valid principals      (a packed list of strings)
    uint64    valid after
    uint64    valid before
    string    critical options      (packed name/data pairs, sorted by name)
    string    extensions            (packed name/data pairs, sorted by name)
    string    reserved              (empty)
    string    signature key         (the CA's public key blob)
    string    signature             (over everything above)

and the signature blob is ``string "rsa-sha2-256" | string sig`` (or ``rsa-sha2-512``),
RFC 8332. The result is parsed back with ``cryptography`` and its signature verified, so
an encoding mistake here is an exception, never a certificate that sshd rejects later.
"""

from __future__ import annotations

import base64
import os
import struct
import typing
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from signet.kms.algorithms import KeyType, Padding
from signet.pki.kmskey import KmsRsaPrivateKey

__all__ = ["CertificateFields", "sign_with_rsa_ca", "ssh_public_key_blob"]

_SIGNATURE_NAMES = {"sha256": b"rsa-sha2-256", "sha512": b"rsa-sha2-512"}


@dataclass(frozen=True)
class CertificateFields:
    """The signed content of an OpenSSH certificate, already validated and encoded."""

    serial: int
    cert_type: SSHCertificateType
    key_id: bytes
    principals: Sequence[bytes]
    valid_after: int
    valid_before: int
    critical_options: Sequence[tuple[bytes, bytes]]
    """(name, value) pairs; a non-empty value is the option's data string."""
    extensions: Sequence[tuple[bytes, bytes]]


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _options(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    # Names must be unique and sorted; a non-empty value is wrapped in its own string.
    out = b""
    for name, value in sorted(pairs):
        out += _string(name) + _string(_string(value) if value else b"")
    return out


def ssh_public_key_blob(public_key: PublicKeyTypes) -> bytes:
    """The SSH wire encoding of a public key (``string type`` followed by its fields)."""
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def sign_with_rsa_ca(
    fields: CertificateFields, subject_public_key: PublicKeyTypes, ca_key: KmsRsaPrivateKey
) -> SSHCertificate:
    """Encode, sign (one ``ca_key.sign`` call) and return the certificate."""
    alg = ca_key.algorithm
    if alg.key_type is not KeyType.RSA or alg.padding is not Padding.PKCS1V15:
        raise ValueError(
            f"{alg.name} cannot sign SSH certificates; OpenSSH only accepts RSA PKCS#1 v1.5 "
            "signatures (rsa-sha2-256, rsa-sha2-512)"
        )
    signature_name = _SIGNATURE_NAMES.get(alg.hash_name or "")
    if signature_name is None:
        raise ValueError(f"{alg.name} uses a hash OpenSSH does not accept for RSA signatures")

    subject_blob = ssh_public_key_blob(subject_public_key)
    key_type_len = struct.unpack(">I", subject_blob[:4])[0]
    key_type = subject_blob[4 : 4 + key_type_len]
    key_fields = subject_blob[4 + key_type_len :]
    cert_type_name = key_type + b"-cert-v01@openssh.com"

    body = b"".join(
        [
            _string(cert_type_name),
            _string(os.urandom(32)),
            key_fields,
            struct.pack(">Q", fields.serial),
            struct.pack(">I", fields.cert_type.value),
            _string(fields.key_id),
            _string(b"".join(_string(p) for p in fields.principals)),
            struct.pack(">Q", fields.valid_after),
            struct.pack(">Q", fields.valid_before),
            _string(_options(fields.critical_options)),
            _string(_options(fields.extensions)),
            _string(b""),
            _string(ssh_public_key_blob(ca_key.public_key())),
        ]
    )
    signature = ca_key.sign(body, alg.rsa_padding(), alg.hash_algorithm())
    blob = body + _string(_string(signature_name) + _string(signature))
    line = cert_type_name + b" " + base64.b64encode(blob)
    cert = typing.cast(SSHCertificate, serialization.load_ssh_public_identity(line))
    cert.verify_cert_signature()
    return cert

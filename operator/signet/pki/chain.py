"""Accepting a user-supplied CA chain for a KMS key.

When the KMS key is an intermediate under someone else's root, the user hands us the PEM
chain for it: the certificate of the KMS key first, then each issuer in turn, optionally
ending with the self-signed root. Everything is checked up front so a bad chain is
reported once, in the resource's status, instead of as handshake failures in every
workload later.

Messages never quote the PEM input: a pasted chain sometimes contains a private key.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signet.pki.checks import check_validity, extension

__all__ = ["CaChain", "parse_ca_chain"]

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_MAX_CHAIN = 10


@dataclass(frozen=True)
class CaChain:
    """A verified chain: ``certificates[0]`` is the KMS key's certificate (the issuer)."""

    certificates: tuple[x509.Certificate, ...]

    @property
    def issuer(self) -> x509.Certificate:
        """The certificate whose key is the KMS key; it signs leaves."""
        return self.certificates[0]

    @functools.cached_property
    def root(self) -> x509.Certificate | None:
        """The self-signed root at the end of the chain, if the user included one."""
        last = self.certificates[-1]
        return last if _is_self_signed(last) else None

    @functools.cached_property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Every certificate except a self-signed root: what a server sends after its leaf."""
        return self.certificates[:-1] if self.root is not None else self.certificates

    @property
    def trust_anchor(self) -> x509.Certificate:
        """What relying parties should trust (``ca.crt``): the root, else the top cert."""
        return self.certificates[-1]

    def leaf_chain_pem(self, leaf: x509.Certificate) -> bytes:
        """``tls.crt`` content: the leaf followed by the intermediates, PEM."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (leaf, *self.intermediates)
        )


def parse_ca_chain(
    pem: bytes | str,
    kms_public_key: PublicKeyTypes,
    *,
    now: datetime.datetime | None = None,
) -> CaChain:
    """Parse and verify ``pem`` as the chain for ``kms_public_key``.

    Checks: only CERTIFICATE blocks; at least one and at most ten certificates; the first
    certifies ``kms_public_key``; each is signed by the next and names it as issuer;
    every one is a CA (basicConstraints cA true, keyCertSign if keyUsage is present)
    whose pathLenConstraint allows the CAs below it; all are valid at ``now``; a
    self-signed certificate, if any, is the last one and its signature verifies.
    """
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    now = datetime.datetime.now(datetime.UTC) if now is None else now
    blocks = [m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise ValueError("CA chain contains no PEM certificates")
    for kind in blocks:
        if kind != "CERTIFICATE":
            raise ValueError(
                f"CA chain contains a {kind!r} PEM block; only CERTIFICATE blocks are allowed"
            )
    if len(blocks) > _MAX_CHAIN:
        raise ValueError(f"CA chain has {len(blocks)} certificates; at most {_MAX_CHAIN}")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("CA chain contains a certificate that is not valid PEM/DER") from None

    first = certs[0]
    if first.public_key() != kms_public_key:
        raise ValueError(
            f"the first certificate in the CA chain ({_name(first)}) is not for the KMS key"
        )
    last = len(certs) - 1
    for depth, cert in enumerate(certs):
        _check_ca(cert, depth, now)
        self_issued = cert.issuer == cert.subject
        if self_issued and depth != last:
            raise ValueError(
                f"self-signed certificate {_name(cert)} must be the last one in the CA chain"
            )
        if depth == last and not self_issued:
            break  # a chain may stop below the root; relying parties hold the root
        parent = cert if depth == last else certs[depth + 1]
        if cert.issuer != parent.subject:
            raise ValueError(
                f"certificate {_name(cert)} is issued by {cert.issuer.rfc4514_string()!r}, "
                f"but the next certificate in the CA chain is {_name(parent)}"
            )
        try:
            cert.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            raise ValueError(
                f"certificate {_name(cert)} is not signed by the key of {_name(parent)}"
            ) from None
    return CaChain(tuple(certs))


def _check_ca(cert: x509.Certificate, depth: int, now: datetime.datetime) -> None:
    constraints = extension(cert, x509.BasicConstraints)
    if constraints is None:
        raise ValueError(f"certificate {_name(cert)} has no basicConstraints; not a CA")
    if not constraints.ca:
        raise ValueError(f"certificate {_name(cert)} is not a CA (basicConstraints cA false)")
    # ``depth`` CA certificates sit below this one (the issued leaf does not count).
    if constraints.path_length is not None and constraints.path_length < depth:
        raise ValueError(
            f"certificate {_name(cert)} has path length {constraints.path_length} but "
            f"{depth} CA certificate(s) below it"
        )
    usage = extension(cert, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise ValueError(f"certificate {_name(cert)} does not allow keyCertSign")
    check_validity(cert, now, f"certificate {_name(cert)}")


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _name(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())

"""The optional outputs of an X.509 Secret, made from the key and chain it already holds.

Everything here is derived from ``tls.key``, ``tls.crt`` and ``ca.crt`` alone, so the same
function serves a fresh issuance and a rewrite after the output spec changed (which costs
no signature), and what a keystore holds always equals the PEM files beside it. The
layouts are cert-manager's: ``keystore.p12`` holds the key, the leaf and the rest of the
chain followed by the CA certificates; ``truststore.p12`` the CA certificates as Java
trusted-certificate entries; ``tls-combined.pem`` the key then the chain; ``key.der`` the
key in DER, in ``tls.key``'s encoding.

cert-manager's default profile, LegacyRC2, encrypts certificates with 40-bit RC2, which
``cryptography`` does not write and OpenSSL 3 reads only through its legacy provider; Signet
writes LegacyDES (3DES with a SHA-1 MAC) for it, which every reader of LegacyRC2 reads too.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from signet.api.outputs import SecretOutputs
from signet.pki import keys
from signet.secretformat import layout

KDF_ROUNDS = 2048
"""What OpenSSL 3 and cert-manager's PKCS#12 encoder use for both profiles."""
_PKCS1_LABELS = (b"-----BEGIN RSA PRIVATE KEY-----", b"-----BEGIN EC PRIVATE KEY-----")


def pem_encoding(key_pem: bytes) -> str:
    """``PKCS1`` for a PKCS#1 (RSA) or SEC1 (EC) PEM key, else ``PKCS8``."""
    return "PKCS1" if key_pem.lstrip().startswith(_PKCS1_LABELS) else "PKCS8"


def _encryption(profile: str, password: bytes) -> serialization.KeySerializationEncryption:
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(KDF_ROUNDS)
    if profile == "Modern2023":
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
            hashes.SHA256()
        )
    else:  # LegacyDES, and LegacyRC2 as the module docstring says: what old Java reads
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
            hashes.SHA1()  # noqa: S303 - the legacy profiles' MAC, chosen by the spec
        )
    return builder.build(password)


def _der(key_pem: bytes) -> bytes:
    """The PEM body, as cert-manager's ``key.der`` is (``pem.Decode(tls.key).Bytes``)."""
    lines = key_pem.strip().splitlines()
    return base64.b64decode(b"".join(line for line in lines if not line.startswith(b"-----")))


def expected_keys(outputs: SecretOutputs) -> tuple[str, ...]:
    """The optional data keys ``outputs`` asks for, in `layout.OUTPUT_KEYS` order (a Secret
    always has a ca.crt, so a keystore comes with its truststore)."""
    wanted = set()
    if outputs.pkcs12 is not None:
        wanted |= {layout.KEYSTORE_P12, layout.TRUSTSTORE_P12}
    if "CombinedPEM" in outputs.formats:
        wanted.add(layout.COMBINED_PEM)
    if "DER" in outputs.formats:
        wanted.add(layout.KEY_DER)
    return tuple(key for key in layout.OUTPUT_KEYS if key in wanted)


def render(
    data: Mapping[str, bytes], outputs: SecretOutputs, password: bytes | None
) -> dict[str, bytes]:
    """The Secret data for ``outputs`` from ``data``'s tls.crt, tls.key and ca.crt; other keys
    of ``data`` (outputs of an earlier spec) are dropped. ``password`` is the PKCS#12
    password when a keystore is asked for. The key must be Signet's own (just generated, or
    from a Secret whose summary checked it): it is loaded without RSA's costly consistency
    check. Raises ValueError for unusable input, without quoting it."""
    key_pem, chain_pem = data[layout.TLS_KEY], data[layout.TLS_CERT]
    ca_pem = data.get(layout.CA_CERT, b"")
    key: keys.LeafPrivateKey | None = None
    wanted = outputs.key_encoding
    if pem_encoding(key_pem) != wanted:
        key = keys.load_private_key(key_pem, own=True)
        key_pem = keys.private_key_to_pem(key, wanted)
    rendered = {layout.TLS_CERT: chain_pem, layout.TLS_KEY: key_pem, layout.CA_CERT: ca_pem}
    if "CombinedPEM" in outputs.formats:
        rendered[layout.COMBINED_PEM] = key_pem + b"\n" + chain_pem
    if "DER" in outputs.formats:
        rendered[layout.KEY_DER] = _der(key_pem)
    if outputs.pkcs12 is not None:
        if not password:
            raise ValueError("a PKCS#12 keystore needs a non-empty password")
        key = key or keys.load_private_key(key_pem, own=True)
        chain = x509.load_pem_x509_certificates(chain_pem)
        cas = x509.load_pem_x509_certificates(ca_pem) if ca_pem.strip() else []
        encryption = _encryption(outputs.pkcs12.profile, password)
        rendered[layout.KEYSTORE_P12] = pkcs12.serialize_key_and_certificates(
            None, key, chain[0], [*chain[1:], *cas], encryption
        )
        if cas:
            rendered[layout.TRUSTSTORE_P12] = pkcs12.serialize_java_truststore(
                [pkcs12.PKCS12Certificate(ca, _alias(ca, i)) for i, ca in enumerate(cas)],
                _encryption(outputs.pkcs12.profile, password),
            )
    return rendered


def _alias(certificate: x509.Certificate, index: int) -> bytes:
    """The truststore entry's alias (friendlyName): unique, and telling which CA it is."""
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "ca"
    return f"{name} {index}".encode() if index else name.encode()

"""Secret summaries: a watched Secret is checked in full; Signet's own write skips the key."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signet.secretformat import layout
from signet.secretformat.summary import summarize


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _secret(cert_key: ec.EllipticCurvePrivateKey, stored_key: ec.EllipticCurvePrivateKey) -> dict:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(0xABC)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(cert_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return {
        "metadata": {"namespace": "ns", "name": "web-tls", "resourceVersion": "7"},
        "type": layout.TLS_TYPE,
        "data": {
            layout.TLS_CERT: encode(pem),
            layout.CA_CERT: encode(pem),
            layout.TLS_KEY: encode(_pem_key(stored_key)),
        },
    }


def test_a_watched_secret_with_a_foreign_key_is_a_mismatch() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    assert summarize(_secret(key, other)).problem == "KeyMismatch"
    assert summarize(_secret(key, key)).problem is None


def test_our_own_write_is_summarised_without_loading_the_key_back() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    secret = _secret(key, key)
    assert summarize(secret, written_by_us=True) == summarize(secret)
    # Not even parsed: a key that could not be loaded is not looked at.
    secret["data"][layout.TLS_KEY] = base64.b64encode(b"not a key").decode()
    assert summarize(secret).problem == "InvalidKey"
    assert summarize(secret, written_by_us=True).problem is None

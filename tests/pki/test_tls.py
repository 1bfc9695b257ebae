"""Issued certificates in a real mutual-TLS handshake (Python ``ssl``, OpenSSL underneath)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signet.pki.keys import LeafPrivateKey, generate_private_key, private_key_to_pem
from signet.pki.x509 import LeafRequest, build_leaf
from tests.pki.conftest import CaFactory, KmsCa, write_pem

SERVER_ID = "spiffe://example.org/ns/prod/sa/api"
CLIENT_ID = "spiffe://example.org/ns/prod/sa/frontend"


@dataclass
class Identity:
    cert: Path
    key: Path


def issue(
    ca: KmsCa,
    tmp_path: Path,
    name: str,
    key: LeafPrivateKey,
    request: LeafRequest,
) -> Identity:
    leaf = ca.sign(lambda k: build_leaf(request, key.public_key(), ca.certificate, k))
    cert = write_pem(tmp_path / f"{name}.crt", leaf)
    key_path = tmp_path / f"{name}.key"
    key_path.write_bytes(private_key_to_pem(key))
    return Identity(cert, key_path)


def spiffe_id(peer: dict[str, Any] | None) -> str:
    """The one URI SAN of a verified peer certificate, per X509-SVID section 5.2."""
    assert peer is not None
    sans = peer.get("subjectAltName", ())
    uris = [value for kind, value in sans if kind == "URI"]
    assert len(uris) == 1, uris
    return str(uris[0])


@dataclass
class Handshake:
    """What each side saw: the peer's SPIFFE ID, or the error that ended the handshake."""

    client_peer_id: str | None = None
    client_error: BaseException | None = None
    server_peer_id: str | None = None
    server_error: BaseException | None = None


def handshake(root: Path, server: Identity, client: Identity, server_hostname: str) -> Handshake:
    """Serve one mTLS connection on 127.0.0.1; both sides trust only ``root``."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(root))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(str(server.cert), str(server.key))
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(root))
    assert client_ctx.check_hostname
    client_ctx.load_cert_chain(str(client.cert), str(client.key))

    result = Handshake()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result.server_peer_id = spiffe_id(tls.getpeercert())
                tls.sendall(b"hello " + result.server_peer_id.encode())
        except OSError as exc:  # ssl.SSLError is an OSError
            result.server_error = exc
        finally:
            listener.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            result.client_peer_id = spiffe_id(tls.getpeercert())
            # TLS 1.3 reports a rejected client certificate only on the first read.
            data = tls.recv(1024)
            if data != b"hello " + CLIENT_ID.encode():
                raise ConnectionError(f"unexpected greeting {data!r}")
    except OSError as exc:
        result.client_error = exc
    finally:
        thread.join(10)
    return result


@pytest.mark.parametrize(
    "algorithm", ["EC_SIGN_P256_SHA256", "RSA_SIGN_PSS_2048_SHA256", "EC_SIGN_ED25519"]
)
def test_mutual_tls_with_spiffe_ids(algorithm: str, kms_ca: CaFactory, tmp_path: Path) -> None:
    ca = kms_ca(algorithm)
    root = write_pem(tmp_path / "root.pem", ca.certificate)
    server = issue(
        ca,
        tmp_path,
        "server",
        generate_private_key("ECDSA", 256),
        LeafRequest(dns_names=("api.example.test",), spiffe_id=SERVER_ID),
    )
    client = issue(
        ca,
        tmp_path,
        "client",
        generate_private_key("RSA", 2048),
        LeafRequest(spiffe_id=CLIENT_ID, duration=datetime.timedelta(hours=1)),
    )

    result = handshake(root, server, client, "api.example.test")

    assert result.server_error is None, result.server_error
    assert result.client_error is None, result.client_error
    assert result.client_peer_id == SERVER_ID
    assert result.server_peer_id == CLIENT_ID


def test_wrong_hostname_is_refused(kms_ca: CaFactory, tmp_path: Path) -> None:
    ca = kms_ca("EC_SIGN_P384_SHA384")
    root = write_pem(tmp_path / "root.pem", ca.certificate)
    key = generate_private_key("Ed25519")
    server_request = LeafRequest(dns_names=("api.example.test",), spiffe_id=SERVER_ID)
    server = issue(ca, tmp_path, "server", key, server_request)
    client = issue(ca, tmp_path, "client", key, LeafRequest(spiffe_id=CLIENT_ID))

    result = handshake(root, server, client, "other.example.test")

    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(result.client_error)
    assert result.server_peer_id is None


def test_certificates_from_another_ca_are_refused(kms_ca: CaFactory, tmp_path: Path) -> None:
    ours = kms_ca("EC_SIGN_P256_SHA256")
    theirs = kms_ca("RSA_SIGN_PKCS1_2048_SHA256")
    root = write_pem(tmp_path / "root.pem", ours.certificate)
    key = generate_private_key("ECDSA", 256)
    server_request = LeafRequest(dns_names=("api.example.test",), spiffe_id=SERVER_ID)
    client_request = LeafRequest(spiffe_id=CLIENT_ID)
    good_server = issue(ours, tmp_path, "good-server", key, server_request)
    good_client = issue(ours, tmp_path, "good-client", key, client_request)
    bad_server = issue(theirs, tmp_path, "bad-server", key, server_request)
    bad_client = issue(theirs, tmp_path, "bad-client", key, client_request)

    # The client refuses a server certificate from the other CA...
    result = handshake(root, bad_server, good_client, "api.example.test")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in str(result.client_error)
    assert result.server_peer_id is None

    # ...and the server refuses a client certificate from it.
    result = handshake(root, good_server, bad_client, "api.example.test")
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(result.server_error)
    assert result.server_peer_id is None
    assert result.client_error is not None

"""A tiny mutual-TLS server and client whose identities come from the kubelet.

Standard library only, so it runs in any python image (the Deployments mount it from a
ConfigMap) and in the example's test, unchanged. Each side presents the credential bundle
the kubelet writes into its ``podCertificate`` volume (one file: the private key the
kubelet made on the node, then the chain Signet signed, leaf first), verifies the peer
against the issuer's ClusterTrustBundle projected next to it, and then checks the peer's
SPIFFE ID: with SPIFFE the identity is the URI SAN, not a host name, so host name checking
is off and the ID check replaces it.

Files are read again for every connection: the kubelet replaces the bundle before the
certificate expires (atomically, so key and certificate always match) and the pod picks
it up without a restart.

    python app.py server --credentials FILE --trust CA_FILE --port 8443 --allow SPIFFE_ID ...
    python app.py client --credentials FILE --trust CA_FILE --connect HOST:PORT --expect ID
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import time
from pathlib import Path


def peer_spiffe_id(conn: ssl.SSLSocket) -> str | None:
    """The single spiffe:// URI SAN of the verified peer certificate, if any."""
    cert = conn.getpeercert() or {}
    sans = cert.get("subjectAltName", ())
    uris = [e[1] for e in sans if isinstance(e, tuple) and len(e) == 2 and e[0] == "URI"]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else None


def context(purpose: ssl.Purpose, credentials: Path, trust: Path) -> ssl.SSLContext:
    """TLS 1.2+ context presenting our certificate and requiring a peer chained to ``trust``.
    ``load_cert_chain`` with one file takes the key and the chain from the bundle alike."""
    protocol = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # SPIFFE: the URI SAN is the identity, checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(trust))
    ctx.load_cert_chain(str(credentials))
    return ctx


def serve(args: argparse.Namespace) -> int:
    allowed = set(args.allow)
    with socket.create_server((args.host, args.port)) as listener:
        print(f"listening on {args.host}:{listener.getsockname()[1]}", flush=True)
        served = 0
        while args.max_connections == 0 or served < args.max_connections:
            raw, address = listener.accept()
            served += 1
            ctx = context(ssl.Purpose.CLIENT_AUTH, args.credentials, args.trust)
            try:
                with ctx.wrap_socket(raw, server_side=True) as conn:
                    peer = peer_spiffe_id(conn)
                    if peer not in allowed:
                        print(f"refused {peer or 'a peer without a SPIFFE ID'}", flush=True)
                        continue
                    print(f"accepted {peer}", flush=True)
                    conn.sendall(f"hello {peer}\n".encode())
            except (ssl.SSLError, OSError) as error:
                print(f"handshake with {address[0]} failed: {error}", flush=True)
    return 0


def call(args: argparse.Namespace) -> int:
    host, _, port = args.connect.rpartition(":")
    while True:
        try:
            ctx = context(ssl.Purpose.SERVER_AUTH, args.credentials, args.trust)
            with (
                socket.create_connection((host, int(port)), timeout=10) as raw,
                ctx.wrap_socket(raw, server_hostname=host) as conn,
            ):
                server = peer_spiffe_id(conn)
                if server != args.expect:
                    print(f"unexpected server identity {server}, wanted {args.expect}", flush=True)
                    status = 1
                else:
                    reply = conn.recv(4096).decode().strip()
                    print(f"server {server} says: {reply or '(connection closed: refused)'}")
                    status = 0 if reply else 1
        except (ssl.SSLError, OSError) as error:
            print(f"connection to {args.connect} failed: {error}", flush=True)
            status = 1
        sys.stdout.flush()
        if args.once:
            return status
        time.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode in ("server", "client"):
        sub = modes.add_parser(mode)
        sub.add_argument(
            "--credentials", type=Path, required=True, help="credential bundle: key, then chain"
        )
        sub.add_argument("--trust", type=Path, required=True, help="CA bundle (the CTB)")
    server = modes.choices["server"]
    server.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a pod's server
    server.add_argument("--port", type=int, default=8443)
    server.add_argument("--allow", action="append", required=True, help="SPIFFE ID to accept")
    server.add_argument("--max-connections", type=int, default=0, help="exit after N (0: never)")
    client = modes.choices["client"]
    client.add_argument("--connect", required=True, help="HOST:PORT")
    client.add_argument("--expect", required=True, help="SPIFFE ID the server must have")
    client.add_argument("--interval", type=float, default=10.0)
    client.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    return serve(args) if args.mode == "server" else call(args)


if __name__ == "__main__":
    sys.exit(main())

"""The /metrics endpoint: prometheus_client's WSGI app for the registry, with the
per-Certificate series (`signet.observe.certmetrics`) written into its answer.

prometheus_client keeps what it is good at (content negotiation between the text format
and OpenMetrics, the ``name[]`` filter, the registry's families); this only adds the large
families after the registry's, before OpenMetrics' closing ``# EOF``, and compresses the
whole answer as it is written when the scraper accepts gzip.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import gzip_accepted

from signet.observe.certmetrics import CertificateSeries

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_EOF = b"# EOF\n"


def metrics_app(registry: CollectorRegistry, certificates: CertificateSeries) -> WsgiApp:
    inner = make_wsgi_app(registry, disable_compression=True)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        answered: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answered.update(status=status, headers=headers)

        body = b"".join(inner(environ, keep))
        status, headers = answered["status"], answered["headers"]
        if environ["REQUEST_METHOD"] != "GET" or not status.startswith("200"):
            start_response(status, headers)
            return [body]
        wanted = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
        closing = b""
        if body.endswith(_EOF):
            body, closing = body[: -len(_EOF)], _EOF
        pieces = _chain(body, certificates.exposition(wanted), closing)
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            headers = [*headers, ("Content-Encoding", "gzip")]
            pieces = _gzipped(pieces)
        start_response(status, headers)
        return pieces

    return app


def _chain(head: bytes, middle: Iterator[str], tail: bytes) -> Iterator[bytes]:
    yield head
    for piece in middle:
        yield piece.encode()
    yield tail


def _gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(wbits=31)  # 31: the gzip container
    for piece in pieces:
        yield compressor.compress(piece)
    yield compressor.flush()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a line each."""


def serve(app: WsgiApp, port: int, address: str) -> int:
    """Serve ``app`` on a daemon thread, as prometheus_client's ``start_http_server``;
    returns the port (``port`` 0 picks a free one)."""
    server = make_server(address, port, app, _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="signet-metrics", daemon=True).start()
    return int(server.server_address[1])

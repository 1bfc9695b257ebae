"""A fault-injecting HTTPS proxy in front of the real kube-apiserver (a pytest plugin).

The apiserver itself cannot be asked to answer 503 to the third POST of a test, nor to
drop a connection after a write has landed; stopping or freezing it hits every client at
once. This proxy sits between one client (a ``KubeApi``, ``kubectl``, the operator) and
the real apiserver, passes everything through, watches included (streamed as they come),
and fails what the test asks for while it runs.

Identities stay honest. The proxy terminates TLS with a certificate of its own (its CA is
in the kubeconfigs it writes) and opens its own TLS connection to the apiserver, so the
apiserver authenticates the proxy's connection, not the client's:

- a bearer token (ServiceAccount kubeconfigs) is forwarded unchanged over a connection
  that presents no client certificate: the apiserver sees that ServiceAccount, and RBAC
  denies what it would deny without the proxy;
- a client certificate is checked in the TLS handshake against the cluster's CA; the one
  certificate the proxy can present upstream is the admin certificate of the kubeconfig
  it fronts (it holds that key), and it does so only for a client that presented that very
  certificate. Any other certificate is refused with 401 rather than promoted to admin;
- a client with neither reaches the apiserver anonymous.

Faults are rules matched in order against each request (method, path glob, watch or not,
or any predicate); the first rule that fires decides. Globs match the decoded path: ``*``
is one path segment, ``**`` any number (``/x/**`` matches ``/x`` too). A rule fires at
most ``times`` times (``None``: without end), each time with ``probability``.

``apiserver_proxy`` (function scope) yields a running :class:`FaultProxy` in front of the
test cluster, stopped at teardown. For longer scopes use ``FaultProxy`` as a context
manager. Example::

    apiserver_proxy.fail(method="POST", path="/api/v1/namespaces/*/secrets", status=503,
                         times=3)
    apiserver_proxy.fail(method=WRITES, status=500, probability=0.2)
    apiserver_proxy.reset(method="POST", path="/api/v1/**", forwarded=True)  # applied, lost
    apiserver_proxy.delay(path="/api/v1/namespaces/default", seconds=math.inf, times=1)
    apiserver_proxy.pause(); ...; apiserver_proxy.resume()
    apiserver_proxy.count(method="POST", path="/api/v1/namespaces/*/secrets")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import random
import re
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict
from yarl import URL

from signet_dev import credentials
from signet_dev import kubeconfig as kubeconfigs
from signet_dev.controlplane import Started
from tests.kube import Kube

T = TypeVar("T")
Action = Literal["status", "reset", "delay"]
Identity = Literal["admin-certificate", "token", "anonymous", "refused"]

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""``method=WRITES``: every request that changes something."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Seen:
    """One request the proxy received, and what became of it."""

    method: str
    path: str
    query: str
    watch: bool
    identity: Identity
    """How the proxy spoke for it upstream ("refused": a certificate it cannot present)."""
    fault: Action | None = None
    """The fault injected into it, if any."""
    status: int | None = None
    """The status the client was sent; None if it got none (reset, hung up, upstream gone)."""


@dataclass
class Rule:
    """A fault to inject; ``fired`` counts the requests it was injected into."""

    action: Action
    methods: frozenset[str] | None
    pattern: re.Pattern[str] | None
    watch: bool | None
    where: Callable[[Seen], bool] | None
    times: int | None
    probability: float
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    forwarded: bool = False
    fired: int = 0

    def matches(self, seen: Seen) -> bool:
        return _matches(seen, self.methods, self.pattern, self.watch, self.where)


def _matches(
    seen: Seen,
    methods: frozenset[str] | None,
    pattern: re.Pattern[str] | None,
    watch: bool | None,
    where: Callable[[Seen], bool] | None = None,
) -> bool:
    return (
        (methods is None or seen.method in methods)
        and (pattern is None or pattern.fullmatch(seen.path) is not None)
        and (watch is None or watch == seen.watch)
        and (where is None or where(seen))
    )


def glob_pattern(glob: str) -> re.Pattern[str]:
    """``*`` one path segment (or part of one), ``**`` any number of them."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def _methods(method: str | Collection[str] | None) -> frozenset[str] | None:
    if method is None:
        return None
    if isinstance(method, str):
        return frozenset({method.upper()})
    return frozenset(m.upper() for m in method)


@dataclass
class _Upstream:
    """Where the proxy forwards to, read from the kubeconfig it fronts."""

    server: str
    ca_pem: bytes | None
    admin_cert_pem: bytes | None
    admin_key_pem: bytes | None
    user: dict[str, Any]
    user_name: str

    @classmethod
    def read(cls, path: Path) -> _Upstream:
        cluster, user_name, user = _current(path)
        return cls(
            server=cluster["server"].rstrip("/"),
            ca_pem=_kubeconfig_bytes(cluster, "certificate-authority"),
            admin_cert_pem=_kubeconfig_bytes(user, "client-certificate"),
            admin_key_pem=_kubeconfig_bytes(user, "client-key"),
            user=user,
            user_name=user_name,
        )


def _current(path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The cluster, user name and user of a kubeconfig's current context."""
    config = yaml.safe_load(path.read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return cluster, context["user"], user


def _kubeconfig_bytes(entry: dict[str, Any], name: str) -> bytes | None:
    if entry.get(f"{name}-data"):
        return base64.b64decode(entry[f"{name}-data"])
    if entry.get(name):
        return Path(entry[name]).read_bytes()
    return None


def _proxy_certificate(folder: Path) -> tuple[Path, Path, bytes]:
    """A CA of the proxy's own and a serving certificate for 127.0.0.1 signed by it: the
    proxy answers statuses itself, so clients must trust it, not the apiserver's CA."""
    ca, ca_key = credentials.new_ca("signet-test-fault-proxy-ca")
    cert_path, key_path = credentials.write_leaf(
        folder,
        "proxy",
        ca,
        ca_key,
        common_name="fault-proxy",
        server=True,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
    )
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


class FaultProxy(Started):
    """The proxy: an aiohttp server and two upstream sessions on a loop in its own thread.

    Every public method may be called from the test's thread while the proxy serves.
    """

    def __init__(self, upstream_kubeconfig: Path, *, seed: int | None = None) -> None:
        self._upstream = _Upstream.read(upstream_kubeconfig)
        self._folder = Path(tempfile.mkdtemp(prefix="signet-fault-proxy-"))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._running = asyncio.Event()
        self._streams: set[asyncio.Transport] = set()
        self._runner: web.ServerRunner | None = None
        self._as_client: aiohttp.ClientSession | None = None
        """Upstream without a client certificate: tokens are forwarded, or no one."""
        self._as_admin: aiohttp.ClientSession | None = None
        """Upstream with the fronted kubeconfig's client certificate."""
        self._admin_der: bytes | None = None
        self.server = ""
        self.ca_pem = b""
        self.kubeconfig = self._folder / "proxy.kubeconfig"
        """The fronted kubeconfig's user, pointed at the proxy."""

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        try:
            self._call(self._start(), timeout=30)
        except BaseException:
            self.stop()
            raise
        self.kubeconfig_for(None, self.kubeconfig)

    def stop(self) -> None:
        """Cut every connection and stop the thread; safe to call twice."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._stop(), timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> None:
        up = self._upstream
        cert, key, self.ca_pem = _proxy_certificate(self._folder)
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(cert, key)
        serving.set_alpn_protocols(["http/1.1"])
        if up.ca_pem is not None:  # ask for client certificates, accept the cluster's only
            serving.load_verify_locations(cadata=up.ca_pem.decode())
            serving.verify_mode = ssl.CERT_OPTIONAL
        upstream = ssl.create_default_context(cadata=up.ca_pem.decode() if up.ca_pem else None)
        self._as_client = self._session(upstream)
        if up.admin_cert_pem is not None and up.admin_key_pem is not None:
            (self._folder / "admin.crt").write_bytes(up.admin_cert_pem)
            (self._folder / "admin.key").write_bytes(up.admin_key_pem)
            (self._folder / "admin.key").chmod(0o600)
            admin = ssl.create_default_context(cadata=up.ca_pem.decode() if up.ca_pem else None)
            admin.load_cert_chain(self._folder / "admin.crt", self._folder / "admin.key")
            self._as_admin = self._session(admin)
            self._admin_der = x509.load_pem_x509_certificate(up.admin_cert_pem).public_bytes(
                serialization.Encoding.DER
            )
        self._running.set()
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # loopback only; the port is known before anyone connects
        self.server = f"https://127.0.0.1:{sock.getsockname()[1]}"
        await web.SockSite(self._runner, sock, ssl_context=serving).start()

    @staticmethod
    def _session(context: ssl.SSLContext) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,  # bytes pass through as the apiserver encoded them
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
        )

    async def _stop(self) -> None:
        self._running.set()  # release paused requests, so they end
        self._cut_streams()
        if self._runner is not None:
            await self._runner.cleanup()
        for session in (self._as_client, self._as_admin):
            if session is not None:
                await session.close()

    # -- what the test sees -----------------------------------------------------------------
    def kubeconfig_for(self, like: Path | None, path: Path | None = None) -> Path:
        """A kubeconfig with the user of ``like`` (a ServiceAccount's token, say; default:
        the fronted kubeconfig's user) that talks to the apiserver through the proxy. It
        lives in the proxy's folder, removed when the proxy stops, unless ``path`` says."""
        if like is None:
            user, user_name = self._upstream.user, self._upstream.user_name
        else:
            _, user_name, user = _current(like)
        target = path or self._folder / f"{(like or self.kubeconfig).stem}.proxied.kubeconfig"
        return kubeconfigs.write(
            target,
            server=self.server,
            ca_data=base64.b64encode(self.ca_pem).decode(),
            user=user,
            user_name=user_name,
        )

    def requests(
        self,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        *,
        watch: bool | None = None,
    ) -> list[Seen]:
        """The requests received so far (since the last ``clear``) that match."""
        methods, pattern = _methods(method), glob_pattern(path) if path else None
        with self._lock:
            return [seen for seen in self._seen if _matches(seen, methods, pattern, watch)]

    def count(
        self,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        *,
        watch: bool | None = None,
    ) -> int:
        return len(self.requests(method, path, watch=watch))

    # -- faults -----------------------------------------------------------------------------
    def fail(
        self,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        *,
        status: int = 503,
        times: int | None = 1,
        probability: float = 1.0,
        retry_after: float | None = None,
        forwarded: bool = False,
        watch: bool | None = None,
        where: Callable[[Seen], bool] | None = None,
    ) -> Rule:
        """Answer ``status`` (a Kubernetes Status body, ``Retry-After`` if given) instead of
        the apiserver; with ``forwarded`` the request reaches the apiserver first and only
        its answer is replaced (a 504 for a write that did land)."""
        return self._add(
            "status",
            method,
            path,
            watch,
            where,
            times,
            probability,
            status=status,
            retry_after=retry_after,
            forwarded=forwarded,
        )

    def reset(
        self,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        *,
        times: int | None = 1,
        probability: float = 1.0,
        forwarded: bool = False,
        watch: bool | None = None,
        where: Callable[[Seen], bool] | None = None,
    ) -> Rule:
        """Close the client's connection once its request is read, without an answer. With
        ``forwarded`` the apiserver gets and applies the request first: the answer is lost,
        not the write; a watch, forwarded, is cut once its stream has begun."""
        return self._add(
            "reset", method, path, watch, where, times, probability, forwarded=forwarded
        )

    def delay(
        self,
        method: str | Collection[str] | None = None,
        path: str | None = None,
        *,
        seconds: float,
        times: int | None = 1,
        probability: float = 1.0,
        watch: bool | None = None,
        where: Callable[[Seen], bool] | None = None,
    ) -> Rule:
        """Hold the request ``seconds`` before forwarding it (``math.inf``: until the client
        gives up, and then it never reaches the apiserver)."""
        return self._add("delay", method, path, watch, where, times, probability, seconds=seconds)

    def pause(self) -> None:
        """Hold every new request and stall every open stream until ``resume``: a frozen
        apiserver, as its clients see it."""
        self._call(self._set_running(False))

    def resume(self) -> None:
        self._call(self._set_running(True))

    def cut_streams(self) -> int:
        """Close every open streaming answer (watches) now; returns how many."""
        return self._call(self._cut_streams_async())

    def clear(self, *, requests: bool = True) -> None:
        """Remove every rule, resume, and (unless told not to) forget the requests seen."""
        with self._lock:
            self._rules.clear()
            if requests:
                self._seen.clear()
        self.resume()

    def _add(
        self,
        action: Action,
        method: str | Collection[str] | None,
        path: str | None,
        watch: bool | None,
        where: Callable[[Seen], bool] | None,
        times: int | None,
        probability: float,
        **details: Any,
    ) -> Rule:
        """Install a rule: the public fault methods differ only in what the rule does."""
        rule = Rule(
            action,
            _methods(method),
            glob_pattern(path) if path else None,
            watch,
            where,
            times,
            probability,
            **details,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    async def _set_running(self, running: bool) -> None:
        if running:
            self._running.set()
        else:
            self._running.clear()

    async def _cut_streams_async(self) -> int:
        return self._cut_streams()

    def _cut_streams(self) -> int:
        streams, self._streams = self._streams, set()
        for transport in streams:
            transport.abort()
        return len(streams)

    # -- serving ----------------------------------------------------------------------------
    def _pick(self, seen: Seen) -> Rule | None:
        with self._lock:
            self._seen.append(seen)
            for rule in self._rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if not rule.matches(seen):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                seen.fault = rule.action
                return rule
        return None

    def _identity(self, request: web.BaseRequest) -> tuple[Seen, aiohttp.ClientSession | None]:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        presented = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        session: aiohttp.ClientSession | None
        if presented:
            admin = presented == self._admin_der
            identity: Identity = "admin-certificate" if admin else "refused"
            session = self._as_admin if admin else None
        else:
            identity = "token" if "Authorization" in request.headers else "anonymous"
            session = self._as_client
        seen = Seen(
            method=request.method,
            path=request.path,
            query=request.query_string,
            watch=request.query.get("watch") in ("true", "1"),
            identity=identity,
        )
        return seen, session

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        seen, session = self._identity(request)
        body = await request.read()
        rule = self._pick(seen)
        await self._running.wait()
        if session is None:
            seen.status = 401
            return _status_response(401, "the fault proxy cannot present this certificate")
        if rule is not None and rule.action == "delay":
            if math.isinf(rule.seconds):
                await asyncio.get_running_loop().create_future()  # until the client hangs up
            else:
                await asyncio.sleep(rule.seconds)
            await self._running.wait()
        if rule is not None and not rule.forwarded:
            if rule.action == "status":
                seen.status = rule.status
                return _status_response(rule.status, "injected by the fault proxy", rule)
            if rule.action == "reset":
                return _abort(request)
        return await self._forward(request, body, session, seen, rule)

    async def _forward(
        self,
        request: web.BaseRequest,
        body: bytes,
        session: aiohttp.ClientSession,
        seen: Seen,
        rule: Rule | None,
    ) -> web.StreamResponse:
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )  # repeated headers (Impersonate-Group, say) stay repeated
        url = URL(self._upstream.server + request.raw_path, encoded=True)
        try:
            async with session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                if rule is not None and rule.forwarded and not seen.watch:
                    await upstream.read()  # the apiserver has done it; the answer is lost
                    if rule.action == "reset":
                        return _abort(request)
                if rule is not None and rule.forwarded and rule.action == "status":
                    seen.status = rule.status
                    return _status_response(rule.status, "injected by the fault proxy", rule)
                return await self._relay(request, upstream, seen, rule)
        except (aiohttp.ClientError, OSError):  # the apiserver went away: so does the answer
            return _abort(request)

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        seen: Seen,
        rule: Rule | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        seen.status = upstream.status
        transport = request.transport
        if transport is None:
            return response
        self._streams.add(transport)
        try:
            await response.prepare(request)
            if rule is not None and rule.action == "reset":  # a watch cut once it has begun
                return _abort(request)
            async for chunk in upstream.content.iter_any():
                await self._running.wait()
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientError):
            # The client left, or the apiserver ended the stream abruptly: pass that on.
            transport.abort()
        finally:
            self._streams.discard(transport)
        return response


def _status_response(status: int, message: str, rule: Rule | None = None) -> web.Response:
    """An error answer shaped as the apiserver's own (a ``Status`` object)."""
    headers = {"Content-Type": "application/json"}
    if rule is not None and rule.retry_after is not None:
        headers["Retry-After"] = f"{rule.retry_after:g}"
    reason = _REASONS.get(status, "Unauthorized" if status == 401 else "InternalError")
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{message} (HTTP {status})",
        "reason": reason,
        "code": status,
    }
    return web.Response(status=status, headers=headers, text=json.dumps(body))


def _abort(request: web.BaseRequest) -> web.StreamResponse:
    """Drop the client's connection, no answer, no TLS close_notify: a reset as the client
    sees it. aiohttp then fails to write the response returned here, quietly."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=599)


@pytest.fixture
def apiserver_proxy(kube: Kube) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test cluster (its kubeconfig: ``.kubeconfig``, the
    admin user), with no rules; stopped when the test ends."""
    with FaultProxy(kube.kubeconfig) as proxy:
        yield proxy


__all__ = ["WRITES", "FaultProxy", "Rule", "Seen", "apiserver_proxy", "glob_pattern"]

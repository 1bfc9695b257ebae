"""PKCS#11 modules, logins and session pools, shared by every HSM signer of a process.

PKCS#11 has process-wide state that a per-key object would get wrong:

* **One login per token.** ``C_Login`` logs in the whole application, not one session;
  a second login answers ``CKR_USER_ALREADY_LOGGED_IN`` and a ``C_Logout`` on any session
  logs every session out. So each token gets one login session held for the life of the
  pool, and the signing sessions are opened without a PIN and inherit the login.
* **Bounded sessions, one caller thread.** Tokens cap sessions (and network HSMs charge
  for them), so each pool keeps at most ``max_sessions``. python-pkcs11 initializes a
  module with ``C_Initialize(NULL)``, which by the PKCS#11 rules promises the module that
  no two threads call it at once (SoftHSM2 then switches its own locking off and
  corrupts its heap under concurrent calls), so every blocking call to one module runs on
  one worker thread, in order: a renewal storm queues in asyncio (bounded by the
  process's sign limiter), never in the token.
* **Restarts invalidate everything.** When a token is re-inserted or its daemon restarts,
  every session and object handle of the process dies at once, and a stale handle number
  may even be reused by a new session. Recovery is therefore module-wide: under an
  exclusive gate (no C call in flight), every pool drops its sessions, the module is
  finalized and initialized again, and a generation counter makes the many callers who
  saw the same failure recover once.

The blocking calls here run in worker threads; :mod:`signet.kms.pkcs11signer` is the
asyncio side.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11e

from signet.api.pkcs11uri import Pkcs11Uri
from signet.kms.errors import (
    KmsError,
    KmsInvalidArgument,
    KmsKeyDisabled,
    KmsKeyNotFound,
    KmsLoginFailed,
    KmsTokenNotFound,
    KmsUnavailable,
    KmsWrongAlgorithm,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_SESSIONS = 8

LOST = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.UserNotLoggedIn,
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
    p11e.GeneralError,
    p11e.FunctionFailed,
)
"""Failures after which this process's sessions (or the module) must be rebuilt: what a
token removal or an HSM daemon restart looks like from the client."""


class NeedPin(Exception):
    """Internal: the pool must log in and has no PIN; the caller fetches it and retries."""


class SessionsLost(Exception):
    """Internal: sessions died (``generation`` is the one they belonged to); the caller
    recovers the module and retries."""

    def __init__(self, generation: int, cause: str) -> None:
        super().__init__(cause)
        self.generation = generation


def map_error(key: str, error: p11e.PKCS11Error, doing: str) -> KmsError:
    """A PKCS#11 failure as the typed error the rest of Signet acts on. The message names
    the operation and the library's error class, never a PIN (the library's messages do
    not carry one, and ours are built from the URI, which cannot)."""
    name = type(error).__name__
    cause = f"{doing}: {name}" + (f" ({error})" if str(error) else "")
    if isinstance(error, p11e.PinIncorrect | p11e.PinInvalid | p11e.PinLenRange):
        return KmsLoginFailed(key, f"{doing}: the token refused the PIN ({name})", code=name)
    if isinstance(error, p11e.PinLocked | p11e.PinExpired | p11e.UserPinNotInitialized):
        return KmsLoginFailed(key, f"{doing}: the user PIN is unusable ({name})", code=name)
    if isinstance(error, p11e.NoSuchToken | p11e.MultipleTokensReturned | p11e.SlotIDInvalid):
        return KmsTokenNotFound(key, cause, code=name)
    if isinstance(error, p11e.NoSuchKey | p11e.MultipleObjectsReturned):
        return KmsKeyNotFound(key, cause, code=name)
    if isinstance(error, p11e.MechanismInvalid | p11e.MechanismParamInvalid):
        return KmsWrongAlgorithm(key, f"{doing}: the token cannot do this mechanism ({name})")
    if isinstance(error, p11e.KeyTypeInconsistent):
        return KmsKeyDisabled(key, f"{doing}: the key may not sign ({name})", code=name)
    if isinstance(error, (*LOST, p11e.SessionCount, p11e.DeviceMemory, p11e.HostMemory)):
        return KmsUnavailable(key, cause, code=name)
    if isinstance(error, p11e.ArgumentsBad | p11e.DataInvalid | p11e.DataLenRange):
        return KmsInvalidArgument(key, cause, code=name)
    return KmsError(key, cause, code=name)


class _Gate:
    """Many C calls at once, or one recovery alone (a readers-writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Module:
    """One loaded PKCS#11 library: its worker thread, its gate and its token pools.

    The gate matters even with one worker: a caller outside the worker (a recovery, a
    test's fault) must not finalize the module in the middle of a call."""

    def __init__(self, path: str, lib: Any, max_sessions: int) -> None:
        self.path = path
        self.lib = lib
        self.gate = _Gate()
        self.generation = 0
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pkcs11")
        """One thread: the module was promised no concurrent calls (see the docstring)."""
        self.max_sessions = max_sessions
        self._pools: dict[int, TokenPool] = {}
        self._lock = threading.Lock()

    def pool(self, key: str, uri: Pkcs11Uri) -> TokenPool:
        """The pool of the one token ``uri`` selects (blocking: lists the slots)."""
        slot = find_slot(self.lib, key, uri)
        with self._lock:
            pool = self._pools.get(slot.slot_id)
            if pool is None:
                pool = self._pools[slot.slot_id] = TokenPool(self, slot)
            return pool

    def recover(self, generation: int) -> None:
        """Rebuild after sessions of ``generation`` died; a no-op if someone already did."""
        with self.gate.exclusive():
            if self.generation != generation:
                return
            with self._lock:
                pools = list(self._pools.values())
            for pool in pools:
                pool.discard()
            try:
                self.lib.reinitialize()
            except p11e.PKCS11Error as error:  # the next call reports what is wrong
                log.warning("PKCS#11 module %s did not reinitialize: %s", self.path, error)
            self.generation += 1
            log.info("PKCS#11 module %s reopened (generation %d)", self.path, self.generation)


def find_slot(lib: Any, key: str, uri: Pkcs11Uri) -> Any:
    """The single slot whose token matches the URI's token attributes."""
    try:
        slots = lib.get_slots(token_present=True)
        matches = []
        for slot in slots:
            if uri.slot_id is not None and slot.slot_id != uri.slot_id:
                continue
            token = slot.get_token()
            serial = token.serial.decode("ascii", "replace").strip()
            if (
                (uri.token is not None and token.label != uri.token)
                or (uri.serial is not None and serial != uri.serial)
                or (uri.manufacturer is not None and token.manufacturer_id != uri.manufacturer)
                or (uri.model is not None and token.model != uri.model)
            ):
                continue
            matches.append(slot)
    except p11e.PKCS11Error as error:
        raise map_error(key, error, "listing tokens") from None
    if not matches:
        raise KmsTokenNotFound(key, f"no {uri.token_description} in PKCS#11 module", code="")
    if len(matches) > 1:
        raise KmsTokenNotFound(
            key, f"{len(matches)} tokens match {uri.token_description}; add serial= to the URI"
        )
    return matches[0]


@dataclass
class Borrowed:
    """A pooled session lent to one call, with what the pool knows that the call needs."""

    session: Any
    objects: dict[str, Any]
    """Key objects this session has looked up, by key URI (handles are per session)."""
    known: set[str]
    """Key URIs found on the token since the last recovery: if one of them is missing
    now, the login (or the whole module) was lost underneath us, not the key."""


class TokenPool:
    """The sessions of one token: one login session plus up to ``max_sessions`` idle
    signing sessions, each remembering the key objects it has looked up.

    Because a login holds for the whole process, an issuer naming a token some other
    issuer logged in to could sign without knowing the PIN. So the pool remembers a salted
    digest of the PIN it logged in with, and every signer must present the same PIN
    (:meth:`accepts`) before it may use the pool.
    """

    def __init__(self, module: Module, slot: Any) -> None:
        self.module = module
        self.slot = slot
        self._lock = threading.Lock()
        self._login: Any = None
        self._idle: list[tuple[Any, dict[str, Any]]] = []
        self._pin: str | None = None
        self._salt = secrets.token_bytes(16)
        self._login_digest: bytes | None = None
        self._refused_digest: bytes | None = None
        """The PIN the token last refused: never offered again (HSMs lock a PIN after a
        few wrong tries, and the operator retries a failing issuer for ever)."""
        self.known: set[str] = set()

    def _digest(self, pin: str) -> bytes:
        return hashlib.sha256(self._salt + pin.encode()).digest()

    def accepts(self, pin: str) -> bool:
        """Whether ``pin`` is the one the token is logged in with (False when it is not
        logged in yet: the caller offers it with :meth:`set_pin` and asks again after)."""
        digest = self._login_digest
        return digest is not None and hmac.compare_digest(digest, self._digest(pin))

    @property
    def logged_in(self) -> bool:
        return self._login is not None

    @property
    def needs_pin(self) -> bool:
        return self._login is None and self._pin is None

    def set_pin(self, pin: str) -> None:
        """Remember the PIN (in memory only) for this and later logins."""
        self._pin = pin

    def forget_pin(self) -> None:
        """After a refused login: the next attempt reads the PIN afresh (it may have been
        rotated in its Secret)."""
        self._pin = None

    def discard(self) -> None:
        """Drop every session (the gate is held exclusively: none is in use)."""
        with self._lock:
            sessions = [s for s, _ in self._idle]
            if self._login is not None:
                sessions.append(self._login)
            self._idle, self._login = [], None
            self.known = set()
        for session in sessions:
            with suppress(p11e.PKCS11Error):  # already dead: that is why we are here
                session.close()

    def _ensure_login(self, key: str) -> None:
        with self._lock:
            if self._login is not None:
                return
            pin = self._pin
            if pin is None:
                raise NeedPin()
            if self._refused_digest is not None and hmac.compare_digest(
                self._refused_digest, self._digest(pin)
            ):
                self._pin = None
                raise KmsLoginFailed(
                    key,
                    "the token refused the PIN earlier; it is not offered again until it "
                    "changes (so that retries cannot lock it)",
                    code="PinIncorrect",
                )
            token = self.slot.get_token()
            try:
                self._login = token.open(user_pin=pin)
            except p11e.UserAlreadyLoggedIn:
                self._login = token.open()  # another pool of this process logged in
            except p11e.PKCS11Error as error:
                self._login_digest = None
                mapped = map_error(key, error, f"logging in to token {token.label!r}")
                if isinstance(mapped, KmsLoginFailed):
                    self._pin = None
                    self._refused_digest = self._digest(pin)
                raise mapped from None
            self._login_digest = self._digest(pin)

    @contextmanager
    def session(self, key: str) -> Iterator[Borrowed]:
        """Borrow a logged-in session and its key-object cache, under the shared gate.

        A failure that means the sessions are gone raises :class:`SessionsLost`; the
        session that saw it is not returned to the pool.
        """
        with self.module.gate.shared():
            generation = self.module.generation
            try:
                self._ensure_login(key)
                with self._lock:
                    entry = self._idle.pop() if self._idle else None
                if entry is None:
                    entry = (self.slot.get_token().open(), {})
            except LOST as error:
                raise SessionsLost(generation, type(error).__name__) from None
            except p11e.PKCS11Error as error:
                raise map_error(key, error, "opening a session") from None
            lost = False
            try:
                yield Borrowed(entry[0], entry[1], self.known)
            except LOST as error:
                lost = True  # its handle may be dead or, worse, reused: never touch it again
                raise SessionsLost(generation, type(error).__name__) from None
            finally:
                if not lost:
                    self._give_back(entry)

    def _give_back(self, entry: tuple[Any, dict[str, Any]]) -> None:
        with self._lock:
            if len(self._idle) < self.module.max_sessions:
                self._idle.append(entry)
                return
        with suppress(p11e.PKCS11Error):
            entry[0].close()


_MODULES: dict[str, Module] = {}
_MODULES_LOCK = threading.Lock()


def load_module(key: str, path: str, max_sessions: int = DEFAULT_MAX_SESSIONS) -> Module:
    """The process's one :class:`Module` for ``path`` (loaded and initialized once)."""
    with _MODULES_LOCK:
        module = _MODULES.get(path)
        if module is None:
            try:
                lib = pkcs11.lib(path)
            except (p11e.PKCS11Error, OSError) as error:
                raise KmsInvalidArgument(
                    key, f"PKCS#11 module {path} could not be loaded: {error}"
                ) from None
            module = _MODULES[path] = Module(path, lib, max_sessions)
        return module


def run_in(module: Module, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run a blocking PKCS#11 call on the module's worker thread."""
    return module.executor.submit(fn)

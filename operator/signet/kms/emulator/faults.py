"""Fault injection and call accounting, both changeable while the server runs.

Tests need to make the emulator misbehave the way Cloud KMS can (slow, flaky, over quota,
corrupting data on the wire) and then assert exactly how many RPCs the client made; that
is what :class:`Faults` and :class:`Counters` are for. Both are thread-safe because the
gRPC server handles calls on a thread pool while tests poke them from the main thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

SIGN = "AsymmetricSign"


@dataclass(frozen=True)
class InjectedError:
    """An error the fault layer decided to return instead of serving the call."""

    code: grpc.StatusCode
    message: str


class Faults:
    """Runtime-settable misbehaviour. Every attribute may be assigned directly.

    * ``latency_s``: sleep added before each matching call.
    * ``error_rate`` / ``error_code``: random failures of matching calls.
    * ``fail_next(n, code)``: the next ``n`` matching calls fail (deterministic).
    * ``sign_qps``: AsymmetricSign quota per second; beyond it RESOURCE_EXHAUSTED.
    * ``corrupt_signature_crc``, ``corrupt_pem_crc``: flip the response checksum.
    * ``drop_verified_crc``: answer ``verified_*_crc32c = False`` (request CRC "lost").
    * ``wrong_response_name``: report another resource name in sign responses.
    * ``methods``: restrict latency and errors to these method names (None = all).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._fail_next: list[tuple[int, grpc.StatusCode, frozenset[str] | None]] = []
        self._window_start = 0.0
        self._window_count = 0
        self.reset()

    def reset(self) -> None:
        """Back to a well-behaved server."""
        with self._lock:
            self.latency_s = 0.0
            self.error_rate = 0.0
            self.error_code = grpc.StatusCode.UNAVAILABLE
            self.sign_qps: float | None = None
            self.corrupt_signature_crc = False
            self.corrupt_pem_crc = False
            self.drop_verified_crc = False
            self.wrong_response_name = False
            self.methods: frozenset[str] | None = None
            self._fail_next.clear()
            self._window_count = 0

    def fail_next(
        self,
        count: int,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        methods: Iterable[str] | None = (SIGN,),
    ) -> None:
        """Make the next ``count`` calls of ``methods`` (None = any) fail with ``code``."""
        with self._lock:
            self._fail_next.append(
                (count, code, frozenset(methods) if methods is not None else None)
            )

    def applies_to(self, method: str) -> bool:
        """Whether latency / random errors target ``method``."""
        return self.methods is None or method in self.methods

    def pick_error(self, method: str) -> InjectedError | None:
        """Consume a scheduled failure or roll the dice; None means serve normally."""
        with self._lock:
            for i, (count, code, methods) in enumerate(self._fail_next):
                if methods is None or method in methods:
                    if count <= 1:
                        del self._fail_next[i]
                    else:
                        self._fail_next[i] = (count - 1, code, methods)
                    return InjectedError(code, f"injected {code.name} (fail_next)")
            rate = self.error_rate
            if rate > 0 and self.applies_to(method) and self._rng.random() < rate:
                return InjectedError(self.error_code, f"injected {self.error_code.name}")
        return None

    def take_sign_quota(self) -> bool:
        """Count one AsymmetricSign against ``sign_qps``; False when over quota.

        A fixed one-second window, like a per-second quota bucket: simple to reason about
        in tests ("at most N accepted per wall-clock second").
        """
        with self._lock:
            if self.sign_qps is None:
                return True
            now = time.monotonic()
            if now - self._window_start >= 1.0:
                self._window_start = now
                self._window_count = 0
            if self._window_count >= self.sign_qps:
                return False
            self._window_count += 1
            return True


class Counters:
    """Calls per (method, resource name, status code) plus in-flight and arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str, str]] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight: Counter[str] = Counter()
        self._arrivals: defaultdict[str, list[float]] = defaultdict(list)

    def reset(self) -> None:
        """Forget everything (tests call this at their start)."""
        with self._lock:
            self._calls.clear()
            self._in_flight.clear()
            self._max_in_flight.clear()
            self._arrivals.clear()

    def started(self, method: str) -> None:
        """A call arrived (before any injected latency)."""
        with self._lock:
            self._arrivals[method].append(time.monotonic())
            self._in_flight[method] += 1
            self._max_in_flight[method] = max(self._max_in_flight[method], self._in_flight[method])

    def finished(self, method: str, name: str, code: grpc.StatusCode) -> None:
        """A call completed with ``code``."""
        with self._lock:
            self._in_flight[method] -= 1
            self._calls[(method, name, code.name)] += 1

    def count(self, method: str, name: str | None = None, code: str | None = None) -> int:
        """Completed calls of ``method``, optionally for one resource and/or one code name
        (``"OK"``, ``"UNAVAILABLE"``, ...)."""
        with self._lock:
            return sum(
                n
                for (m, r, c), n in self._calls.items()
                if m == method and (name is None or r == name) and (code is None or c == code)
            )

    def max_in_flight(self, method: str) -> int:
        """Highest number of concurrent calls of ``method`` seen since the last reset."""
        with self._lock:
            return self._max_in_flight[method]

    def arrivals(self, method: str) -> list[float]:
        """``time.monotonic()`` arrival stamps of ``method`` calls, for rate measurements."""
        with self._lock:
            return list(self._arrivals[method])

    def snapshot(self) -> dict[str, int]:
        """``{"Method name CODE": n}`` for logging and benchmark reports."""
        with self._lock:
            return {f"{m} {r} {c}": n for (m, r, c), n in sorted(self._calls.items())}

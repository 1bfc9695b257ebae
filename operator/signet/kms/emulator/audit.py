"""Data-access audit log, one JSON object per line, shaped like Cloud Audit Logs.

Operators reviewing who used the CA key need the same facts Cloud KMS records: when,
which method, which resource, who called (user agent, peer) and the outcome. Request and
response payloads (digests, signatures, keys) are deliberately never written.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import grpc

SERVICE = "google.cloud.kms.v1.KeyManagementService"


class AuditLog:
    """Appends entries to a file (if given) and keeps them in memory for tests."""

    def __init__(self, path: str | Path | None = None, keep: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._entries: list[dict[str, object]] = []
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.path = Path(path) if path else None

    def record(
        self,
        method: str,
        resource: str,
        code: grpc.StatusCode,
        message: str,
        metadata: dict[str, str],
        peer: str,
        latency_s: float,
    ) -> None:
        """Write one entry; flushed at once so a crash does not lose the trail."""
        entry: dict[str, object] = {
            "timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
            "logName": "cloudaudit.googleapis.com%2Fdata_access",
            "protoPayload": {
                "serviceName": "cloudkms.googleapis.com",
                "methodName": f"{SERVICE}.{method}",
                "resourceName": resource,
                "requestMetadata": {
                    "callerIp": peer,
                    "callerSuppliedUserAgent": metadata.get("user-agent", ""),
                    "apiClient": metadata.get("x-goog-api-client", ""),
                },
                "status": {"code": code.value[0], "codeName": code.name, "message": message},
            },
            "latencyMs": round(latency_s * 1000, 3),
            "severity": "INFO" if code is grpc.StatusCode.OK else "ERROR",
        }
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._entries.append(entry)
            del self._entries[: -self._keep]
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()

    def entries(self) -> list[dict[str, object]]:
        """A copy of the most recent entries (oldest first)."""
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        """Close the file; further entries stay in memory only."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

"""One JSON audit record per KMS signature.

Cloud KMS already logs that a key was used; this says what for: which Certificate of
which namespace got which serial, names and validity, signed by which key version. Records
carry fingerprints of public keys, never key material, so the audit stream can be shipped
anywhere.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger("signet.audit")


class AuditLog:
    """Writes each record to the ``signet.audit`` logger and, optionally, appends it to a
    file (JSON lines) that a log shipper can tail."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> dict[str, Any]:
        entry = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "kind": "signet.dev/signature",
            **fields,
        }
        line = json.dumps(entry, sort_keys=True, default=str)
        logger.info("%s", line)
        if self._path is not None:
            with self._lock, self._path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        return entry

"""CRC32C as Cloud KMS uses it for end-to-end integrity of digests, signatures and PEMs.

KMS returns checksums as ``Int64Value`` wrappers; both the client and the emulator need
the same computation, so it lives here once.
"""

from __future__ import annotations

import google_crc32c


def crc32c(data: bytes) -> int:
    """CRC32C of ``data`` as a non-negative int (what goes into an ``Int64Value``)."""
    return int(google_crc32c.value(data))

"""A local stand-in for Cloud KMS that speaks the real ``KeyManagementService`` gRPC API.

Signet's code under test uses the real ``google-cloud-kms`` client against it, so the
emulator, not a mock, is what keeps the tests honest: it checks resource names, digest
types, CRC32C checksums and key states the way Cloud KMS does, and can inject the
failures Cloud KMS produces (latency, UNAVAILABLE, quota, corrupted checksums).

Entry points: :func:`serve` (in-process, returns :class:`EmulatorServer`) and
:func:`main` (the ``signet kms-emulator`` CLI).
"""

from signet.kms.emulator.audit import AuditLog
from signet.kms.emulator.cli import build_arg_parser, main
from signet.kms.emulator.faults import Counters, Faults
from signet.kms.emulator.server import DEFAULT_LOCATION, DEFAULT_PROJECT, EmulatorServer, serve

__all__ = [
    "DEFAULT_LOCATION",
    "DEFAULT_PROJECT",
    "AuditLog",
    "Counters",
    "EmulatorServer",
    "Faults",
    "build_arg_parser",
    "main",
    "serve",
]

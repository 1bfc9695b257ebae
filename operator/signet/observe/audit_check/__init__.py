"""Checks of the audit trail: is the chain intact, and does every signature Cloud KMS made
have its Signet record (and every record its KMS signature)?

Pure functions over lines and parsed records, so the CLI, the tests and anyone's own
tooling share one reading of the chain rules written down in :mod:`signet.observe.audit`.

``verify`` stops at the first break and names it as precisely as the neighbouring records
allow: a record changed after it was written, records removed, records out of order, a
record that is not part of the chain, or a line that is not a record at all. Breaks it
cannot see are the ones no unkeyed hash chain can: a cut tail, or a rewrite of everything
from some point on. ``reconcile`` covers the first against the KMS log; shipping records
off the host as they are written covers the second.
"""

from signet.observe.audit_check.lines import (
    Line,
    Location,
    from_log,
    lines_of,
    read_lines,
    read_records,
)
from signet.observe.audit_check.reconcile import (
    DEFAULT_SKEW,
    DEFAULT_TOLERANCE,
    KmsSignature,
    Match,
    ReconcileResult,
    SignetSignature,
    format_reconcile,
    kms_signature,
    parse_time,
    reconcile,
)
from signet.observe.audit_check.verify import Break, ChainStart, VerifyResult, format_verify, verify

__all__ = [
    "DEFAULT_SKEW",
    "DEFAULT_TOLERANCE",
    "Break",
    "ChainStart",
    "KmsSignature",
    "Line",
    "Location",
    "Match",
    "ReconcileResult",
    "SignetSignature",
    "VerifyResult",
    "format_reconcile",
    "format_verify",
    "from_log",
    "kms_signature",
    "lines_of",
    "parse_time",
    "read_lines",
    "read_records",
    "reconcile",
    "verify",
]

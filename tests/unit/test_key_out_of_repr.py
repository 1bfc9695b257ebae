"""A signed identity kept in memory holds its private key; its repr must not show it, so
no log line, assertion message or traceback that formats one can leak the key."""

from __future__ import annotations

import datetime

from signet.controller.unwritten import Unwritten
from signet.controller.watchcache import cert_id
from signet.issuance import Issued
from signet.reasons import Reason

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
KEY = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"


def test_a_kept_certificate_does_not_show_its_key() -> None:
    issued = Issued(
        secret_type="kubernetes.io/tls",
        data={"tls.key": KEY, "tls.crt": b"-----BEGIN CERTIFICATE-----"},
        annotations={},
        serial="1f",
        not_before=NOW,
        not_after=NOW,
        public_key_fingerprint="ab",
        signature="sig",
    )
    kept = Unwritten(
        cert=cert_id("team-a", "web"),
        issued=issued,
        signature="sig",
        uid="u",
        generation=1,
        spec_hash="h",
        key_version="v",
        revision=1,
        trigger=Reason.DOES_NOT_EXIST,
        renew_at=NOW,
    )
    for text in (repr(issued), repr(kept), str(kept)):
        assert "PRIVATE KEY" not in text and "MIGHAgEA" not in text
        assert "1f" in text  # the rest is still there to read

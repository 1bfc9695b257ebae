"""Every issuance trigger, refusal and no-op, each with its named reason."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from signet.api.certificate import parse_certificate_spec
from signet.decisions.certificate import (
    RETRY_CAP,
    Action,
    CertificateView,
    IssuerKey,
    decide,
    renewal_time,
    retry_delay,
)
from signet.secretformat import layout
from signet.secretformat.summary import SecretSummary

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
KEY = "projects/p-signet/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
SPEC = parse_certificate_spec(
    {"issuerRef": {"name": "ca"}, "secretName": "web-tls", "x509": {"dnsNames": ["web.shop.svc"]}}
)
CERT = CertificateView("shop", "web", "uid-1", SPEC)
ISSUER = IssuerKey(KEY, "ab12")


def _secret(**changes: Any) -> SecretSummary:
    annotations = {
        layout.CERTIFICATE_NAME: "web",
        layout.ISSUER_NAME: "ca",
        layout.ISSUER_KIND: "Issuer",
        layout.KEY_VERSION: KEY,
        layout.SPEC_HASH: SPEC.content_hash(),
        layout.ISSUED_AT: "2026-11-26T11:00:00Z",
    }
    base = SecretSummary(
        namespace="shop",
        name="web-tls",
        resource_version="7",
        secret_type=layout.TLS_TYPE,
        labels={layout.MANAGED_BY_LABEL: layout.MANAGED_BY},
        annotations=annotations,
        owner_uid="uid-1",
        serial="01",
        not_before=NOW - datetime.timedelta(hours=1),
        not_after=NOW + datetime.timedelta(hours=23),
        ca_key_id="ab12",
    )
    return dataclasses.replace(base, **changes)


def test_healthy_secret_needs_nothing_until_renewal() -> None:
    decision = decide(CERT, _secret(), ISSUER, NOW)
    assert (decision.action, decision.reason) == (Action.NOTHING, "UpToDate")
    assert decision.wake_at is not None
    lifetime = datetime.timedelta(hours=24)
    assert (
        NOW + datetime.timedelta(hours=15) - lifetime * 0.05
        <= decision.wake_at
        <= NOW + datetime.timedelta(hours=15)
    )


@pytest.mark.parametrize(
    ("secret", "issuer", "action", "reason"),
    [
        (None, ISSUER, Action.ISSUE, "DoesNotExist"),
        (_secret(labels={}), ISSUER, Action.REFUSE, "SecretNotManaged"),
        (_secret(owner_uid="uid-2"), ISSUER, Action.REFUSE, "SecretInUse"),
        (
            _secret(annotations={**_secret().annotations, layout.CERTIFICATE_NAME: "api"}),
            ISSUER,
            Action.REFUSE,
            "SecretInUse",
        ),
        (_secret(problem="KeyMismatch", problem_message="m"), ISSUER, Action.ISSUE, "KeyMismatch"),
        (
            _secret(annotations={**_secret().annotations, layout.ISSUER_NAME: "old"}),
            ISSUER,
            Action.ISSUE,
            "IncorrectIssuer",
        ),
        (_secret(), IssuerKey(KEY.replace("/1", "/2"), "ab12"), Action.ISSUE, "IncorrectIssuer"),
        (_secret(ca_key_id="ffff"), ISSUER, Action.ISSUE, "IncorrectIssuer"),
        (
            _secret(annotations={**_secret().annotations, layout.SPEC_HASH: "x"}),
            ISSUER,
            Action.ISSUE,
            "SpecChanged",
        ),
        (_secret(not_after=NOW - datetime.timedelta(seconds=1)), ISSUER, Action.ISSUE, "Expired"),
        (_secret(not_after=NOW + datetime.timedelta(hours=1)), ISSUER, Action.ISSUE, "Renewing"),
        (_secret(), None, Action.NOTHING, "UpToDate"),
    ],
)
def test_triggers(
    secret: SecretSummary | None, issuer: IssuerKey | None, action: Action, reason: str
) -> None:
    decision = decide(CERT, secret, issuer, NOW)
    assert (decision.action, decision.reason) == (action, reason), decision.message


def test_template_drift_is_repaired_not_reissued() -> None:
    spec = dataclasses.replace(SPEC, secret_labels={"team": "shop"})
    cert = dataclasses.replace(CERT, spec=spec)
    decision = decide(cert, _secret(), ISSUER, NOW)
    assert (decision.action, decision.reason) == (Action.REPAIR_METADATA, "SecretMetadataDrift")
    assert "label 'team'" in decision.message


@pytest.mark.parametrize(
    ("requested", "action"),
    [
        ("2026-11-26T11:30:00Z", Action.ISSUE),
        ("2026-11-26T10:30:00Z", Action.NOTHING),
        ("2026-11-26T11:00:00Z", Action.NOTHING),
        ("2026-11-27T11:00:00Z", Action.NOTHING),  # from the future: ignored, never a loop
        ("yesterday", Action.NOTHING),
    ],
)
def test_manual_renewal(requested: str, action: Action) -> None:
    cert = dataclasses.replace(CERT, renew_requested_at=requested)
    assert decide(cert, _secret(), ISSUER, NOW).action is action


def test_renewal_time_is_stable_jittered_and_sane() -> None:
    start, end = NOW, NOW + datetime.timedelta(hours=24)
    times = {renewal_time(f"uid-{i}", start, end, datetime.timedelta(hours=8)) for i in range(50)}
    assert len(times) > 40, "jitter spreads a batch"
    assert all(
        start + datetime.timedelta(hours=14, minutes=48)
        <= t
        <= start + datetime.timedelta(hours=16)
        for t in times
    )
    assert renewal_time("a", start, end, datetime.timedelta(hours=8)) == renewal_time(
        "a", start, end, datetime.timedelta(hours=8)
    )
    # renewBefore longer than half the lifetime is honoured, jitter never goes before it
    early = renewal_time("a", start, end, datetime.timedelta(hours=20))
    assert (
        start + datetime.timedelta(hours=2, minutes=48)
        <= early
        <= start + datetime.timedelta(hours=4)
    )


def test_retry_delay_grows_from_seconds_and_is_capped() -> None:
    delays = [retry_delay(n).total_seconds() for n in range(0, 12)]
    assert delays[:5] == [0, 2, 4, 8, 16]
    assert max(delays) == RETRY_CAP.total_seconds() == 300
    assert retry_delay(10_000) == RETRY_CAP

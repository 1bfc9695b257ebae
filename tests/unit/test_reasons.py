"""One enum says, for every reason, whether Signet retries on its own."""

from __future__ import annotations

import pytest

from signet.api import SpecError
from signet.api.certificate import parse_certificate_spec
from signet.api.issuer import parse_issuer_spec
from signet.reasons import Kind, Reason

KEY = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (Reason.DOES_NOT_EXIST, Kind.TRIGGER),
        (Reason.RENEWING, Kind.TRIGGER),
        (Reason.UP_TO_DATE, Kind.SETTLED),
        (Reason.SECRET_IN_USE, Kind.REFUSED),
        (Reason.INVALID_DURATION, Kind.REFUSED),
        (Reason.DNS_NAME_NOT_ALLOWED, Kind.REFUSED),
        (Reason.NAMESPACE_NOT_ALLOWED, Kind.REFUSED),
        (Reason.ISSUER_NOT_FOUND, Kind.TRANSIENT),
        (Reason.ISSUER_NOT_READY, Kind.TRANSIENT),
        (Reason.KMS_PERMISSION_DENIED, Kind.TRANSIENT),
        (Reason.SECRET_WRITE_FAILED, Kind.TRANSIENT),
        (Reason.CA_SECRET_NOT_FOUND, Kind.TRANSIENT),
    ],
)
def test_each_reason_says_whether_it_is_retried(reason: Reason, kind: Kind) -> None:
    assert reason.kind is kind
    assert reason.permanent is (kind is Kind.REFUSED)


def test_every_reason_has_exactly_one_kind() -> None:
    assert {reason.kind for reason in Reason} == set(Kind)
    assert len({reason.value for reason in Reason}) == len(Reason)


@pytest.mark.parametrize(
    "spec",
    [
        {"kms": {"cloudKMS": {"keyVersion": KEY}}, "policy": {"maxDuration": "forever"}},
        {"kms": {"cloudKMS": {"keyVersion": "not-a-key"}}, "ssh": {"enabled": True}},
        {"kms": {"cloudKMS": {"keyVersion": KEY}}},
        {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {"enabled": True}, "trustDomain": "A/B"},
    ],
)
def test_issuer_spec_errors_are_permanent(spec: dict[str, object]) -> None:
    """They wait for the spec to change (which wakes the issuer) instead of retrying."""
    with pytest.raises(SpecError) as raised:
        parse_issuer_spec("Issuer", "ca", "team-a", spec)
    assert isinstance(raised.value.reason, Reason)
    assert raised.value.reason.permanent


@pytest.mark.parametrize(
    "spec",
    [
        {"issuerRef": {"name": "ca"}, "secretName": "s", "duration": "0h", "x509": {}},
        {"issuerRef": {"name": "ca", "kind": "Nope"}, "secretName": "s"},
        {"issuerRef": {"name": "ca"}, "secretName": "s", "privateKey": {"algorithm": "DSA"}},
    ],
)
def test_certificate_spec_errors_are_permanent(spec: dict[str, object]) -> None:
    with pytest.raises(SpecError) as raised:
        parse_certificate_spec(spec)
    assert isinstance(raised.value.reason, Reason)
    assert raised.value.reason.permanent

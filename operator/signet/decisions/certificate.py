"""Does this Certificate need a new signature, a metadata repair, or nothing until later?

Every outcome names its reason, in the spirit of cert-manager's issuing triggers: the
reason lands in the Issuing condition and an Event, so an SRE can tell *why* Signet spent
a KMS signature. The function is pure: it sees the parsed spec, the summary of the Secret
and what the issuer currently signs with, and the time.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
from dataclasses import dataclass

from signet.api.certificate import CertificateSpec
from signet.reasons import Reason
from signet.secretformat import layout
from signet.secretformat.outputs import expected_keys
from signet.secretformat.summary import SecretSummary

JITTER_FRACTION = 0.05
"""Renewal moves earlier by up to this share of the lifetime, spread by UID, so a batch
created together does not come due in the same second."""

RETRY_BASE = datetime.timedelta(seconds=2)
RETRY_CAP = datetime.timedelta(minutes=5)


class Action(enum.Enum):
    """What a pass does next."""

    NOTHING = "nothing"
    ISSUE = "issue"
    REPAIR_METADATA = "repair-metadata"
    REWRITE_OUTPUTS = "rewrite-outputs"
    """Rewrite the Secret's data from the key and chain it holds: no signature."""
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    """The next step for a Certificate, and the reason an SRE reads in its conditions."""

    action: Action
    reason: Reason
    message: str
    wake_at: datetime.datetime | None = None
    """When to look again if nothing happens in between (renewal time)."""


@dataclass(frozen=True)
class CertificateView:
    """The parts of a Certificate object a decision reads."""

    namespace: str
    name: str
    uid: str
    spec: CertificateSpec
    renew_requested_at: str | None = None


@dataclass(frozen=True)
class IssuerKey:
    """What the issuer signs with now; a Secret signed by anything else is re-issued."""

    key_version: str
    ca_key_id: str | None


def renewal_time(
    uid: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    renew_before: datetime.timedelta,
) -> datetime.datetime:
    """notAfter - renewBefore, moved earlier by a jitter that is stable per Certificate.

    Stable means a restarted operator computes the same time and rewrites no status; the
    jitter never pushes renewal before the first half of the lifetime.
    """
    lifetime = not_after - not_before
    base = not_after - min(renew_before, lifetime)
    spread = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") / 2**32
    jittered = base - lifetime * (JITTER_FRACTION * spread)
    return max(jittered, min(base, not_before + lifetime / 2))


def retry_delay(failed_attempts: int) -> datetime.timedelta:
    """Exponential backoff from seconds (not cert-manager's hour), capped at five minutes."""
    if failed_attempts <= 0:
        return datetime.timedelta(0)
    return min(RETRY_BASE * (1 << min(failed_attempts - 1, 20)), RETRY_CAP)


def _template_drift(spec: CertificateSpec, secret: SecretSummary) -> str | None:
    for key, value in spec.secret_labels.items():
        if secret.labels.get(key) != value:
            return f"label {key!r}"
    for key, value in spec.secret_annotations.items():
        if secret.annotations.get(key) != value:
            return f"annotation {key!r}"
    return None


def _outputs_mismatch(spec: CertificateSpec, secret: SecretSummary) -> str | None:
    """cert-manager rewrites keystores and additional output formats without re-issuing
    when they change; so does Signet, and with them an explicit privateKey.encoding."""
    if spec.x509 is None:
        return None
    if secret.annotations.get(layout.OUTPUTS) != spec.outputs.fingerprint():
        return (
            "Secret data was written for other keystores, additionalOutputFormats or "
            "privateKey.encoding"
        )
    expected = expected_keys(spec.outputs)
    if secret.output_keys != expected:
        missing = [key for key in expected if key not in secret.output_keys]
        if missing:
            return f"Secret data lacks {', '.join(missing)}"
        extra = [key for key in secret.output_keys if key not in expected]
        return f"Secret data holds {', '.join(extra)}, which the spec does not ask for"
    return None


def _issuer_mismatch(
    cert: CertificateView, secret: SecretSummary, issuer: IssuerKey | None
) -> str | None:
    ref, annotations = cert.spec.issuer_ref, secret.annotations
    if annotations.get(layout.ISSUER_NAME) != ref.name or (
        annotations.get(layout.ISSUER_KIND) != ref.kind
    ):
        return (
            f"Secret was issued by {annotations.get(layout.ISSUER_KIND)}/"
            f"{annotations.get(layout.ISSUER_NAME)}, spec asks for {ref.kind}/{ref.name}"
        )
    if issuer is None:
        return None
    if annotations.get(layout.KEY_VERSION) != issuer.key_version:
        return f"issuer now signs with {issuer.key_version}"
    if issuer.ca_key_id and secret.ca_key_id and secret.ca_key_id != issuer.ca_key_id:
        return "certificate was not signed by the issuer's current CA key"
    return None


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _renewal_requested(requested: str | None, issued: str | None, now: datetime.datetime) -> bool:
    """`signet renew` stamps the Certificate; honour a stamp newer than the Secret.

    A stamp in the future is ignored rather than obeyed until it passes, which would
    re-issue in a loop.
    """
    requested_at, issued_at = _parse_time(requested), _parse_time(issued)
    return (
        requested_at is not None
        and issued_at is not None
        and issued_at < requested_at <= now + datetime.timedelta(seconds=5)
    )


def decide(
    cert: CertificateView,
    secret: SecretSummary | None,
    issuer: IssuerKey | None,
    now: datetime.datetime,
) -> Decision:
    """The next step for ``cert``. ``issuer`` is None while the issuer is not known yet;
    then only checks that do not depend on it are made."""
    spec = cert.spec
    if secret is None:
        return Decision(
            Action.ISSUE, Reason.DOES_NOT_EXIST, f"Secret {spec.secret_name!r} does not exist"
        )
    if not secret.managed:
        return Decision(
            Action.REFUSE,
            Reason.SECRET_NOT_MANAGED,
            f"Secret {spec.secret_name!r} exists and was not created by Signet; "
            "refusing to overwrite it (delete it or choose another secretName)",
        )
    if secret.certificate_name != cert.name or (
        secret.owner_uid is not None and secret.owner_uid != cert.uid
    ):
        return Decision(
            Action.REFUSE,
            Reason.SECRET_IN_USE,
            f"Secret {spec.secret_name!r} belongs to Certificate {secret.certificate_name!r}; "
            "two Certificates cannot share a Secret",
        )
    if secret.problem is not None:
        return Decision(Action.ISSUE, secret.problem, secret.problem_message)
    mismatch = _issuer_mismatch(cert, secret, issuer)
    if mismatch:
        return Decision(Action.ISSUE, Reason.INCORRECT_ISSUER, mismatch)
    if secret.annotations.get(layout.SPEC_HASH) != spec.content_hash():
        return Decision(
            Action.ISSUE, Reason.SPEC_CHANGED, "the spec changed since the last issuance"
        )
    if _renewal_requested(cert.renew_requested_at, secret.annotations.get(layout.ISSUED_AT), now):
        return Decision(Action.ISSUE, Reason.MANUALLY_TRIGGERED, "renewal requested (signet renew)")
    assert secret.not_before is not None and secret.not_after is not None
    if now >= secret.not_after:
        return Decision(
            Action.ISSUE,
            Reason.EXPIRED,
            f"certificate expired at {secret.not_after:%Y-%m-%dT%H:%M:%SZ}",
        )
    due = renewal_time(
        cert.uid, secret.not_before, secret.not_after, spec.renew_before_or_default()
    )
    if now >= due:
        return Decision(
            Action.ISSUE, Reason.RENEWING, f"renewal time {due:%Y-%m-%dT%H:%M:%SZ} reached"
        )
    outputs = _outputs_mismatch(spec, secret)
    if outputs:
        return Decision(Action.REWRITE_OUTPUTS, Reason.SECRET_OUTPUTS_MISMATCH, outputs, due)
    drift = _template_drift(spec, secret)
    if drift:
        return Decision(
            Action.REPAIR_METADATA,
            Reason.SECRET_METADATA_DRIFT,
            f"Secret {drift} differs from secretTemplate",
            due,
        )
    return Decision(Action.NOTHING, Reason.UP_TO_DATE, "certificate is up to date", due)

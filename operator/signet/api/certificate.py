"""`Certificate`: what a namespace asks for.

Parsing is strict and total: every field the controller reads is checked here once, so the
decision and issuance code can trust the dataclass and never poke at raw dicts.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from signet.api.duration import parse_duration
from signet.api.errors import SpecError
from signet.api.outputs import SecretOutputs, parse_outputs
from signet.reasons import Reason

KEY_SIZES = {"ECDSA": (256, 384, 521), "RSA": (2048, 3072, 4096), "Ed25519": ()}
DEFAULT_KEY_SIZE = {"ECDSA": 256, "RSA": 2048, "Ed25519": None}
USAGES = (
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "timestamping",
    "ocsp signing",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "any",
)
"""cert-manager's usage names Signet issues; policy.allowedUsages says which an issuer grants."""
CA_USAGES = ("cert sign", "crl sign")
"""cert-manager offers them; Signet never makes a workload a CA, so they are refused."""
DEFAULT_USAGES = ("digital signature", "key encipherment", "server auth", "client auth")
EXTENDED_USAGES = (
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "timestamping",
    "ocsp signing",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "any",
)
SPIFFE_USAGES_RULE = (
    "a SPIFFE X509-SVID with extended key usages must include both 'server auth' and 'client auth'"
)
"""Worded as the CRD's CEL rule on spec.x509 words it, so kubectl and Ready=False agree."""
SSH_EXTENSIONS = (
    "permit-pty",
    "permit-port-forwarding",
    "permit-agent-forwarding",
    "permit-X11-forwarding",
    "permit-user-rc",
    "no-touch-required",
)
DEFAULT_USER_SSH_EXTENSIONS = ("permit-pty",)
"""Not ssh-keygen's defaults (which add every forwarding and ~/.ssh/rc): least privilege."""
SSH_CRITICAL_OPTIONS = {"forceCommand": "force-command", "sourceAddress": "source-address"}
"""spec.ssh.criticalOptions field -> OpenSSH name, as policy.allowedSSHCriticalOptions lists."""
MIN_DURATION = datetime.timedelta(minutes=1)
MAX_DURATION = datetime.timedelta(hours=87600)

RENEW_ANNOTATION = "signet.dev/renew-requested-at"
"""`signet renew` stamps a Certificate with the time; a stamp newer than its Secret's
issued-at asks for a new certificate (cert-manager's `cmctl renew`, as an annotation)."""


@dataclass(frozen=True)
class IssuerRef:
    """The issuer a Certificate asks for; namespaced Issuers only in its own namespace."""

    name: str
    kind: str = "Issuer"

    @property
    def cluster_scoped(self) -> bool:
        return self.kind == "ClusterIssuer"


@dataclass(frozen=True)
class PrivateKeySpec:
    """The leaf key Signet generates; ``Never`` rotation keeps a fitting key across renewals."""

    algorithm: str = "ECDSA"
    size: int | None = 256
    rotation_policy: str = "Always"


@dataclass(frozen=True)
class Subject:
    """Distinguished-name attributes beyond the common name (cert-manager's ``subject``)."""

    organizations: tuple[str, ...] = ()
    organizational_units: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    provinces: tuple[str, ...] = ()
    street_addresses: tuple[str, ...] = ()
    postal_codes: tuple[str, ...] = ()
    serial_number: str | None = None


@dataclass(frozen=True)
class X509Spec:
    """What an X.509 certificate names; every name is checked against the issuer's policy."""

    common_name: str | None = None
    subject: Subject = field(default_factory=Subject)
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    usages: tuple[str, ...] = DEFAULT_USAGES
    spiffe_service_account: str | None = None


@dataclass(frozen=True)
class SSHSpec:
    """An OpenSSH user or host certificate; options and extensions are policy-governed."""

    cert_type: str
    principals: tuple[str, ...]
    key_id: str | None = None
    force_command: str | None = None
    source_address: tuple[str, ...] = ()
    extensions: tuple[str, ...] = DEFAULT_USER_SSH_EXTENSIONS


@dataclass(frozen=True)
class CertificateSpec:
    """A Certificate's spec, validated; its content hash on the Secret detects spec changes."""

    issuer_ref: IssuerRef
    secret_name: str
    duration: datetime.timedelta
    renew_before: datetime.timedelta | None
    private_key: PrivateKeySpec
    x509: X509Spec | None = None
    ssh: SSHSpec | None = None
    secret_labels: Mapping[str, str] = field(default_factory=dict)
    secret_annotations: Mapping[str, str] = field(default_factory=dict)
    outputs: SecretOutputs = field(default_factory=SecretOutputs)
    """How the key and chain are written (encoding, keystores, extra formats): not part of
    the content hash, since rewriting them costs no signature."""

    def content_hash(self) -> str:
        """A fingerprint of everything that shapes the issued certificate.

        Stored on the Secret: when it differs from the current spec, the identity no longer
        matches what was asked and is re-issued. renewBefore, rotationPolicy, the
        secretTemplate and the outputs are left out on purpose: changing them must not cost
        a signature.
        Every decision asks for it, so it is worked out once per parsed spec.
        """
        return self._content_hash

    @functools.cached_property
    def _content_hash(self) -> str:
        shaped = {
            "issuer": _shape(self.issuer_ref),
            "duration": self.duration.total_seconds(),
            "key": [self.private_key.algorithm, self.private_key.size],
            "x509": _x509_shape(self.x509) if self.x509 else None,
            "ssh": _shape(self.ssh) if self.ssh else None,
        }
        encoded = json.dumps(shaped, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()[:20]

    def renew_before_or_default(self) -> datetime.timedelta:
        """cert-manager's default: renew when two thirds of the lifetime have passed."""
        return self.renew_before if self.renew_before is not None else self.duration / 3


_LATER_SUBJECT_FIELDS = {"street_addresses": (), "postal_codes": (), "serial_number": None}
"""Subject fields added after the content hash was first stored: left out while unset, so a
spec that does not use them keeps the hash its Secret carries (no re-issue on upgrade)."""


def _shape(spec: Any) -> dict[str, Any]:
    """The fields of a spec dataclass, nested ones as dicts: what ``asdict`` gives once
    serialized, without its deep copies (a restart hashes every Certificate's spec)."""
    shaped = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        shaped[f.name] = _shape(value) if is_dataclass(value) else value
    return shaped


def _x509_shape(spec: X509Spec) -> dict[str, Any]:
    shaped = _shape(spec)
    subject = shaped["subject"]
    for name, unset in _LATER_SUBJECT_FIELDS.items():
        if subject[name] == unset:
            del subject[name]
    return shaped


def _strings(value: Any, field_name: str, *, limit: int = 100) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(Reason.INVALID_SPEC, f"{field_name}: expected a list of strings")
    if len(value) > limit:
        raise SpecError(
            Reason.INVALID_SPEC, f"{field_name}: at most {limit} entries, got {len(value)}"
        )
    return tuple(value)


def _mapping(value: Any, field_name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(Reason.INVALID_SPEC, f"{field_name}: expected an object")
    return value


def _private_key(raw: Mapping[str, Any]) -> PrivateKeySpec:
    algorithm = raw.get("algorithm", "ECDSA")
    if algorithm not in KEY_SIZES:
        raise SpecError(
            Reason.UNSUPPORTED_KEY_ALGORITHM,
            f"spec.privateKey.algorithm: {algorithm!r} is not one of ECDSA, RSA, Ed25519",
        )
    size = raw.get("size", DEFAULT_KEY_SIZE[algorithm])
    if algorithm == "Ed25519":
        if size is not None:
            raise SpecError(
                Reason.UNSUPPORTED_KEY_SIZE, "spec.privateKey.size: Ed25519 keys have no size"
            )
    elif size not in KEY_SIZES[algorithm]:
        raise SpecError(
            Reason.UNSUPPORTED_KEY_SIZE,
            f"spec.privateKey.size: {algorithm} keys must be one of "
            f"{', '.join(map(str, KEY_SIZES[algorithm]))} bits, got {size!r}",
        )
    rotation = raw.get("rotationPolicy", "Always")
    if rotation not in ("Always", "Never"):
        raise SpecError(Reason.INVALID_SPEC, f"spec.privateKey.rotationPolicy: {rotation!r}")
    return PrivateKeySpec(algorithm, size, rotation)


def _x509(raw: Mapping[str, Any]) -> X509Spec:
    subject_raw = _mapping(raw.get("subject"), "spec.x509.subject")
    subject = Subject(
        organizations=_strings(subject_raw.get("organizations"), "subject.organizations"),
        organizational_units=_strings(
            subject_raw.get("organizationalUnits"), "subject.organizationalUnits"
        ),
        countries=_strings(subject_raw.get("countries"), "subject.countries"),
        localities=_strings(subject_raw.get("localities"), "subject.localities"),
        provinces=_strings(subject_raw.get("provinces"), "subject.provinces"),
        street_addresses=_strings(
            subject_raw.get("streetAddresses"), "subject.streetAddresses", limit=8
        ),
        postal_codes=_strings(subject_raw.get("postalCodes"), "subject.postalCodes", limit=8),
        serial_number=_optional_string(subject_raw.get("serialNumber"), "subject.serialNumber"),
    )
    ips = _strings(raw.get("ipAddresses"), "spec.x509.ipAddresses", limit=32)
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpecError(
                Reason.INVALID_SPEC, f"spec.x509.ipAddresses: {ip[:64]!r} is not an IP address"
            ) from None
    usages = _usages(raw)
    spiffe = _mapping(raw.get("spiffe"), "spec.x509.spiffe")
    service_account = spiffe.get("serviceAccount") if spiffe else None
    uris = _strings(raw.get("uris"), "spec.x509.uris", limit=16)
    if service_account is not None and uris:
        raise SpecError(
            Reason.INVALID_SPEC, "spec.x509: a SPIFFE X509-SVID carries exactly one URI; drop uris"
        )
    if (
        service_account is not None
        and any(u in EXTENDED_USAGES for u in usages)
        and not {"server auth", "client auth"} <= set(usages)
    ):
        # The signer refuses it too; saying so here names the field and costs no KMS call.
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.x509.usages {list(usages)}: {SPIFFE_USAGES_RULE}"
        )
    common_name = raw.get("commonName")
    if common_name is not None and (not isinstance(common_name, str) or len(common_name) > 64):
        raise SpecError(
            Reason.INVALID_SPEC, "spec.x509.commonName: a string of at most 64 characters"
        )
    spec = X509Spec(
        common_name=common_name,
        subject=subject,
        dns_names=tuple(n.lower() for n in _strings(raw.get("dnsNames"), "spec.x509.dnsNames")),
        ip_addresses=ips,
        uris=uris,
        email_addresses=_strings(raw.get("emailAddresses"), "spec.x509.emailAddresses", limit=16),
        usages=usages,
        spiffe_service_account=service_account,
    )
    if not (
        spec.common_name
        or spec.dns_names
        or spec.ip_addresses
        or spec.uris
        or spec.email_addresses
        or spec.spiffe_service_account
    ):
        raise SpecError(
            Reason.INVALID_SPEC, "spec.x509: name at least one identity (SAN or commonName)"
        )
    return spec


def _optional_string(value: Any, field_name: str, *, limit: int = 64) -> str | None:
    if value is not None and (not isinstance(value, str) or not value or len(value) > limit):
        raise SpecError(Reason.INVALID_SPEC, f"{field_name}: a string of 1 to {limit} characters")
    return value


def _usages(raw: Mapping[str, Any]) -> tuple[str, ...]:
    usages = _strings(raw.get("usages"), "spec.x509.usages", limit=16) or DEFAULT_USAGES
    for usage in usages:
        if usage in CA_USAGES:
            raise SpecError(
                Reason.USAGE_NOT_ALLOWED,
                f"spec.x509.usages: {usage!r} is refused: Signet never issues CA certificates "
                "to workloads",
            )
        if usage not in USAGES:
            raise SpecError(Reason.INVALID_SPEC, f"spec.x509.usages: unknown usage {usage[:64]!r}")
    if len(set(usages)) != len(usages):
        raise SpecError(Reason.INVALID_SPEC, "spec.x509.usages: a usage is listed twice")
    return usages


def _ssh(raw: Mapping[str, Any]) -> SSHSpec:
    cert_type = raw.get("type")
    if cert_type not in ("user", "host"):
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.ssh.type: must be user or host, got {cert_type!r}"
        )
    principals = _strings(raw.get("principals"), "spec.ssh.principals", limit=64)
    if not principals:
        raise SpecError(
            Reason.INVALID_SPEC, "spec.ssh.principals: at least one principal is required"
        )
    options = _mapping(raw.get("criticalOptions"), "spec.ssh.criticalOptions")
    extensions = _strings(raw.get("extensions"), "spec.ssh.extensions", limit=8)
    unknown = [e for e in extensions if e not in SSH_EXTENSIONS]
    if unknown:
        raise SpecError(
            Reason.INVALID_SPEC, f"spec.ssh.extensions: unknown extension {unknown[0]!r}"
        )
    if cert_type == "host" and (options or extensions):
        raise SpecError(
            Reason.INVALID_SPEC,
            "spec.ssh: host certificates carry no critical options or extensions",
        )
    key_id = raw.get("keyId")
    if key_id is not None and not isinstance(key_id, str):
        raise SpecError(Reason.INVALID_SPEC, "spec.ssh.keyId: expected a string")
    return SSHSpec(
        cert_type=cert_type,
        principals=principals,
        key_id=key_id,
        force_command=options.get("forceCommand"),
        source_address=_strings(options.get("sourceAddress"), "sourceAddress", limit=32),
        extensions=extensions
        if "extensions" in raw
        else (() if cert_type == "host" else DEFAULT_USER_SSH_EXTENSIONS),
    )


RESERVED_PREFIXES = ("signet.dev/", "app.kubernetes.io/managed-by")
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$"
)
LABEL_VALUE = re.compile(rf"^({_NAME})?$")


def _template(template: Mapping[str, Any], kind: str) -> dict[str, str]:
    """secretTemplate labels/annotations, minus the keys Signet owns: a template fighting
    over them would have the operator repair the Secret forever."""
    values = dict(_mapping(template.get(kind), f"spec.secretTemplate.{kind}"))
    where = f"spec.secretTemplate.{kind}"
    for key, value in values.items():
        if key.startswith(RESERVED_PREFIXES):
            raise SpecError(Reason.INVALID_SPEC, f"{where}: {key!r} is reserved for Signet")
        prefix = key.rpartition("/")[0]
        if not QUALIFIED_NAME.match(key) or len(prefix) > 253:
            raise SpecError(Reason.INVALID_SPEC, f"{where}: {key[:80]!r} is not a valid key")
        if not isinstance(value, str):
            raise SpecError(Reason.INVALID_SPEC, f"{where}.{key}: expected a string")
        if kind == "labels" and not LABEL_VALUE.match(value):
            raise SpecError(
                Reason.INVALID_SPEC, f"{where}.{key}: {value[:80]!r} is not a valid label value"
            )
    return values


def parse_certificate_spec(spec: Mapping[str, Any]) -> CertificateSpec:
    """Validate a Certificate's ``spec``; raise `SpecError` on the first problem."""
    issuer_raw = _mapping(spec.get("issuerRef"), "spec.issuerRef")
    issuer_name = issuer_raw.get("name")
    if not isinstance(issuer_name, str) or not issuer_name:
        raise SpecError(Reason.INVALID_SPEC, "spec.issuerRef.name is required")
    kind = issuer_raw.get("kind", "Issuer")
    if kind not in ("Issuer", "ClusterIssuer"):
        raise SpecError(
            Reason.INVALID_ISSUER_REF,
            f"spec.issuerRef.kind: {kind!r} is not Issuer or ClusterIssuer",
        )
    if issuer_raw.get("group", "signet.dev") != "signet.dev":
        raise SpecError(
            Reason.INVALID_ISSUER_REF, "spec.issuerRef.group: only signet.dev is served"
        )
    secret_name = spec.get("secretName")
    if not isinstance(secret_name, str) or not secret_name:
        raise SpecError(Reason.INVALID_SPEC, "spec.secretName is required")
    duration = parse_duration(spec.get("duration", "24h"), field="spec.duration")
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise SpecError(Reason.INVALID_DURATION, "spec.duration: must be between 1m and 87600h")
    renew_before = None
    if spec.get("renewBefore") is not None:
        renew_before = parse_duration(spec["renewBefore"], field="spec.renewBefore")
        if renew_before >= duration:
            raise SpecError(
                Reason.INVALID_DURATION, "spec.renewBefore must be shorter than spec.duration"
            )
    has_x509, has_ssh = spec.get("x509") is not None, spec.get("ssh") is not None
    if has_x509 == has_ssh:
        raise SpecError(Reason.INVALID_SPEC, "exactly one of spec.x509 or spec.ssh must be set")
    template = _mapping(spec.get("secretTemplate"), "spec.secretTemplate")
    private_key_raw = _mapping(spec.get("privateKey"), "spec.privateKey")
    private_key = _private_key(private_key_raw)
    return CertificateSpec(
        issuer_ref=IssuerRef(issuer_name, kind),
        secret_name=secret_name,
        duration=duration,
        renew_before=renew_before,
        private_key=private_key,
        x509=_x509(_mapping(spec["x509"], "spec.x509")) if has_x509 else None,
        ssh=_ssh(_mapping(spec["ssh"], "spec.ssh")) if has_ssh else None,
        secret_labels=_template(template, "labels"),
        secret_annotations=_template(template, "annotations"),
        outputs=parse_outputs(spec, private_key_raw),
    )

"""`Issuer` and `ClusterIssuer`: a KMS key version plus the policy that bounds its use."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from signet.api.certificate import SSH_CRITICAL_OPTIONS, SSH_EXTENSIONS, USAGES
from signet.api.duration import parse_duration
from signet.api.errors import SpecError
from signet.api.pkcs11uri import Pkcs11Key, parse_pkcs11_key
from signet.reasons import Reason

KEY_VERSION = re.compile(
    r"^projects/[a-z][a-z0-9-]{4,61}[a-z0-9]/locations/[a-z0-9-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}"
    r"/cryptoKeys/[a-zA-Z0-9_-]{1,63}/cryptoKeyVersions/[0-9]{1,10}$"
)
TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")

DEFAULT_DNS_PATTERNS = ("*.{namespace}.svc", "*.{namespace}.svc.cluster.local")
DEFAULT_URI_PATTERNS = ("spiffe://{trustDomain}/ns/{namespace}/sa/*",)
DEFAULT_SSH_PRINCIPAL_PATTERNS = ("{namespace}-*",)
DEFAULT_SSH_EXTENSIONS = ("permit-pty",)
DEFAULT_SSH_CRITICAL_OPTIONS = ("source-address",)
DEFAULT_ALLOWED_USAGES = tuple(
    u
    for u in USAGES
    if u not in ("timestamping", "ocsp signing", "ipsec end system", "ipsec tunnel", "ipsec user")
    and u != "any"
)
"""The Certificate ``usages`` granted unless policy.allowedUsages says otherwise: every key
usage and the extended ones for TLS, code signing and mail. Timestamping, OCSP signing,
IPsec and "any" would let a workload speak for the CA's whole domain in another protocol,
so an issuer grants them by name."""
POD_KEY_TYPES = ("RSA3072", "RSA4096", "ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519")
"""The kubelet's key types, all of which Signet certifies."""
POD_DNS_NAMES_ANNOTATION = "signet.dev/dns-names"
"""The one userAnnotations key Signet's signers read: comma-separated DNS names."""
MIN_POD_CERTIFICATE_DURATION = datetime.timedelta(hours=1)
"""The shortest lifetime the apiserver accepts in a PodCertificateRequest's status."""
CSR_USAGES = (
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
)
"""The CertificateSigningRequest ``spec.usages`` an issuer may grant: Kubernetes' names for
what an end-entity certificate may do. CA usages (cert sign, crl sign), "any" and the
rest are never granted."""
DEFAULT_CSR_USAGES = ("digital signature", "key encipherment", "server auth", "client auth")
MIN_CSR_DURATION = datetime.timedelta(minutes=10)
"""The shortest ``spec.expirationSeconds`` the apiserver accepts on a CSR."""


@dataclass(frozen=True)
class Policy:
    """What an issuer grants. ``None`` means "the default"; an empty tuple grants nothing.

    Defaults are deliberately narrow: a namespace gets names under its own
    ``<namespace>.svc`` domain, SPIFFE IDs of its own ServiceAccounts and SSH principals
    prefixed with its name. Anything wider is the platform team's explicit choice: so is a
    wildcard certificate (one key answering for every name under a domain), and so is an
    SSH certificate that may forward ports, agents or X11, run ~/.ssh/rc or be pinned to
    one command. Critical options that only narrow a certificate (source-address) and an
    interactive terminal (permit-pty) are granted by default.
    """

    max_duration: datetime.timedelta = datetime.timedelta(hours=2160)
    allowed_dns_names: tuple[str, ...] = DEFAULT_DNS_PATTERNS
    allowed_ip_ranges: tuple[str, ...] = ()
    allowed_uris: tuple[str, ...] = DEFAULT_URI_PATTERNS
    allowed_email_addresses: tuple[str, ...] = ()
    allowed_common_names: tuple[str, ...] | None = None
    allowed_ssh_principals: tuple[str, ...] = DEFAULT_SSH_PRINCIPAL_PATTERNS
    allowed_ssh_types: tuple[str, ...] = ("user", "host")
    allowed_key_algorithms: tuple[str, ...] = ("ECDSA", "RSA", "Ed25519")
    allow_wildcards: bool = False
    allowed_ssh_extensions: tuple[str, ...] = DEFAULT_SSH_EXTENSIONS
    allowed_ssh_critical_options: tuple[str, ...] = DEFAULT_SSH_CRITICAL_OPTIONS
    allowed_usages: tuple[str, ...] = DEFAULT_ALLOWED_USAGES


@dataclass(frozen=True)
class CASecretRef:
    """A user-supplied CA chain whose leaf is the KMS key's certificate."""

    name: str
    key: str = "ca.crt"
    namespace: str | None = None


@dataclass(frozen=True)
class SelfSignedCA:
    """A root CA certificate bootstrapped by the KMS key signing itself."""

    common_name: str
    organization: str | None
    duration: datetime.timedelta


@dataclass(frozen=True)
class PodCertificates:
    """Whether and how the issuer signs Kubernetes PodCertificateRequests: opt-in, because
    any pod that mounts a podCertificate volume naming the signer asks for an identity."""

    enabled: bool = False
    default_duration: datetime.timedelta = datetime.timedelta(hours=24)
    allowed_key_types: tuple[str, ...] = POD_KEY_TYPES
    dns_names_from_user_annotations: bool = False
    """Whether a pod may ask for DNS names (``POD_DNS_NAMES_ANNOTATION`` in the volume's
    userAnnotations); each name is still checked against the policy for its namespace."""


@dataclass(frozen=True)
class CertificateSigningRequests:
    """Whether and for whom the issuer signs Kubernetes CertificateSigningRequests: opt-in,
    because anyone allowed to create one and anyone allowed to approve it would share the
    issuer's authority. A ServiceAccount gets what the policy grants its namespace; any
    other requester only when named here, since it belongs to no namespace the policy
    could speak for."""

    enabled: bool = False
    default_duration: datetime.timedelta = datetime.timedelta(hours=24)
    allowed_usages: tuple[str, ...] = DEFAULT_CSR_USAGES
    allowed_users: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class RotationSettings:
    """How a key change rolls out (see `signet.decisions.rotation`): long enough by default
    for every kubelet to refresh a mounted bundle before a peer meets the new key."""

    trust_propagation: datetime.timedelta = datetime.timedelta(minutes=5)
    reissue_qps: float = 10.0
    """Leaves of the old key replaced per second, under the process-wide --sign-qps."""
    retirement_grace: datetime.timedelta | None = None
    """How long the old anchor outlives its last leaf; default the propagation period,
    which a withdrawal needs to reach pods as much as a publication does."""

    @property
    def grace(self) -> datetime.timedelta:
        if self.retirement_grace is None:
            return self.trust_propagation
        return self.retirement_grace


@dataclass(frozen=True)
class IssuerSpec:
    """An Issuer or ClusterIssuer: the KMS key, the CA, the policy and what it issues."""

    kind: str
    name: str
    namespace: str | None
    key_version: str
    ca_secret: CASecretRef | None
    self_signed: SelfSignedCA | None
    ssh_enabled: bool
    trust_domain: str
    policy: Policy
    namespace_selector: Mapping[str, Any] | None = field(default=None)
    pkcs11: Pkcs11Key | None = field(default=None)
    """Set when the key is on a PKCS#11 token; ``key_version`` is then its canonical URI."""
    pod_certificates: PodCertificates = field(default_factory=PodCertificates)
    certificate_signing_requests: CertificateSigningRequests = field(
        default_factory=CertificateSigningRequests
    )
    rotation: RotationSettings = field(default_factory=RotationSettings)

    @property
    def x509_enabled(self) -> bool:
        return self.ca_secret is not None or self.self_signed is not None

    @property
    def ref(self) -> str:
        """How humans and annotations name this issuer: ``Kind/name`` or ``Kind/ns/name``."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


def _patterns(raw: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(Reason.INVALID_POLICY, f"spec.policy.{key}: expected a list of strings")
    return tuple(value)


def _names(
    raw: Mapping[str, Any], key: str, default: tuple[str, ...], known: tuple[str, ...]
) -> tuple[str, ...]:
    """A list of fixed names: a misspelt one would silently grant nothing, so it is refused."""
    values = _patterns(raw, key, default)
    for value in values:
        if value not in known:
            raise SpecError(
                Reason.INVALID_POLICY,
                f"spec.policy.{key}: {value[:64]!r} is not one of {', '.join(known)}",
            )
    return values


def _policy(raw: Mapping[str, Any]) -> Policy:
    max_duration = parse_duration(raw.get("maxDuration", "2160h"), field="spec.policy.maxDuration")
    ranges = _patterns(raw, "allowedIPRanges", ())
    for cidr in ranges:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise SpecError(
                Reason.INVALID_POLICY, f"spec.policy.allowedIPRanges: {cidr!r} is not a CIDR"
            ) from None
    common_names = raw.get("allowedCommonNames")
    allow_wildcards = raw.get("allowWildcards", False)
    if not isinstance(allow_wildcards, bool):
        raise SpecError(Reason.INVALID_POLICY, "spec.policy.allowWildcards: expected true or false")
    return Policy(
        max_duration=max_duration,
        allowed_dns_names=_patterns(raw, "allowedDNSNames", DEFAULT_DNS_PATTERNS),
        allowed_ip_ranges=ranges,
        allowed_uris=_patterns(raw, "allowedURIs", DEFAULT_URI_PATTERNS),
        allowed_email_addresses=_patterns(raw, "allowedEmailAddresses", ()),
        allowed_common_names=None
        if common_names is None
        else _patterns(raw, "allowedCommonNames", ()),
        allowed_ssh_principals=_patterns(
            raw, "allowedSSHPrincipals", DEFAULT_SSH_PRINCIPAL_PATTERNS
        ),
        allowed_ssh_types=_patterns(raw, "allowedSSHCertificateTypes", ("user", "host")),
        allowed_key_algorithms=_patterns(raw, "allowedKeyAlgorithms", ("ECDSA", "RSA", "Ed25519")),
        allow_wildcards=allow_wildcards,
        allowed_ssh_extensions=_names(
            raw, "allowedSSHExtensions", DEFAULT_SSH_EXTENSIONS, SSH_EXTENSIONS
        ),
        allowed_ssh_critical_options=_names(
            raw,
            "allowedSSHCriticalOptions",
            DEFAULT_SSH_CRITICAL_OPTIONS,
            tuple(SSH_CRITICAL_OPTIONS.values()),
        ),
        allowed_usages=_names(raw, "allowedUsages", DEFAULT_ALLOWED_USAGES, USAGES),
    )


def _pod_certificates(raw: Any) -> PodCertificates:
    if raw is None:
        return PodCertificates()
    if not isinstance(raw, Mapping):
        raise SpecError(Reason.INVALID_SPEC, "spec.podCertificates: expected an object")
    enabled, dns_names = raw.get("enabled", False), raw.get("dnsNamesFromUserAnnotations", False)
    for field_name, value in (("enabled", enabled), ("dnsNamesFromUserAnnotations", dns_names)):
        if not isinstance(value, bool):
            raise SpecError(
                Reason.INVALID_SPEC, f"spec.podCertificates.{field_name}: expected true or false"
            )
    duration = parse_duration(
        raw.get("defaultDuration", "24h"), field="spec.podCertificates.defaultDuration"
    )
    if duration < MIN_POD_CERTIFICATE_DURATION:
        raise SpecError(
            Reason.INVALID_DURATION,
            "spec.podCertificates.defaultDuration must be at least 1h (the apiserver refuses "
            "shorter pod certificates)",
        )
    key_types = raw.get("allowedKeyTypes")
    if key_types is None:
        key_types = list(POD_KEY_TYPES)
    if not isinstance(key_types, list) or not all(isinstance(k, str) for k in key_types):
        raise SpecError(
            Reason.INVALID_SPEC, "spec.podCertificates.allowedKeyTypes: expected a list of strings"
        )
    for key_type in key_types:
        if key_type not in POD_KEY_TYPES:
            raise SpecError(
                Reason.INVALID_SPEC,
                f"spec.podCertificates.allowedKeyTypes: {key_type[:64]!r} is not one of "
                f"{', '.join(POD_KEY_TYPES)}",
            )
    return PodCertificates(enabled, duration, tuple(key_types), dns_names)


def _csr_strings(raw: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.certificateSigningRequests.{key}: expected a list of non-empty strings",
        )
    return tuple(value)


def _certificate_signing_requests(raw: Any) -> CertificateSigningRequests:
    if raw is None:
        return CertificateSigningRequests()
    if not isinstance(raw, Mapping):
        raise SpecError(Reason.INVALID_SPEC, "spec.certificateSigningRequests: expected an object")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise SpecError(
            Reason.INVALID_SPEC, "spec.certificateSigningRequests.enabled: expected true or false"
        )
    duration = parse_duration(
        raw.get("defaultDuration", "24h"), field="spec.certificateSigningRequests.defaultDuration"
    )
    if duration < MIN_CSR_DURATION:
        raise SpecError(
            Reason.INVALID_DURATION,
            "spec.certificateSigningRequests.defaultDuration must be at least 10m (the "
            "apiserver's shortest spec.expirationSeconds)",
        )
    usages = _csr_strings(raw, "allowedUsages", DEFAULT_CSR_USAGES)
    for usage in usages:
        if usage not in CSR_USAGES:
            raise SpecError(
                Reason.INVALID_SPEC,
                f"spec.certificateSigningRequests.allowedUsages: {usage[:64]!r} is not one of "
                f"{', '.join(CSR_USAGES)}",
            )
    return CertificateSigningRequests(
        enabled=enabled,
        default_duration=duration,
        allowed_usages=usages,
        allowed_users=_csr_strings(raw, "allowedUsers", ()),
        allowed_groups=_csr_strings(raw, "allowedGroups", ()),
    )


MAX_TRUST_PROPAGATION = datetime.timedelta(hours=168)
MAX_REISSUE_QPS = 1000.0


def _rotation_duration(raw: Mapping[str, Any], key: str) -> datetime.timedelta | None:
    value = raw.get(key)
    if value is None:
        return None
    duration = parse_duration(value, field=f"spec.rotation.{key}")
    if duration > MAX_TRUST_PROPAGATION:
        raise SpecError(Reason.INVALID_DURATION, f"spec.rotation.{key} must be at most 168h")
    return duration


def _rotation(raw: Any) -> RotationSettings:
    if raw is None:
        return RotationSettings()
    if not isinstance(raw, Mapping):
        raise SpecError(Reason.INVALID_SPEC, "spec.rotation: expected an object")
    qps = raw.get("reissueQPS", RotationSettings.reissue_qps)
    if isinstance(qps, bool) or not isinstance(qps, int | float) or not 0 < qps <= MAX_REISSUE_QPS:
        raise SpecError(
            Reason.INVALID_SPEC,
            f"spec.rotation.reissueQPS must be a number above 0 and at most {MAX_REISSUE_QPS:g}",
        )
    propagation = _rotation_duration(raw, "trustPropagation") or RotationSettings.trust_propagation
    return RotationSettings(
        trust_propagation=propagation,
        reissue_qps=float(qps),
        retirement_grace=_rotation_duration(raw, "retirementGrace"),
    )


def _kms_key(kind: str, kms: Mapping[str, Any]) -> tuple[str, Pkcs11Key | None]:
    """The key's identity string and, for an HSM key, how to reach it: exactly one of
    ``cloudKMS`` and ``pkcs11``."""
    if ("cloudKMS" in kms) == ("pkcs11" in kms):
        raise SpecError(
            Reason.INVALID_KEY_VERSION, "spec.kms: set exactly one of cloudKMS or pkcs11"
        )
    if "pkcs11" in kms:
        try:
            key = parse_pkcs11_key(kms["pkcs11"])
        except ValueError as error:
            raise SpecError(Reason.INVALID_KEY_VERSION, str(error)) from None
        return key.uri.canonical, key
    key_version = (kms.get("cloudKMS") or {}).get("keyVersion")
    if not isinstance(key_version, str) or not KEY_VERSION.match(key_version):
        raise SpecError(
            Reason.INVALID_KEY_VERSION,
            "spec.kms.cloudKMS.keyVersion must be projects/P/locations/L/keyRings/R/cryptoKeys/K"
            f"/cryptoKeyVersions/N, got {str(key_version)[:200]!r}",
        )
    return key_version, None


def parse_issuer_spec(
    kind: str, name: str, namespace: str | None, spec: Mapping[str, Any]
) -> IssuerSpec:
    """Validate an Issuer/ClusterIssuer ``spec``; raise `SpecError` on the first problem."""
    key_version, pkcs11 = _kms_key(kind, spec.get("kms") or {})
    x509 = spec.get("x509") or {}
    ca_secret = self_signed = None
    if x509.get("caSecretRef") is not None and x509.get("selfSigned") is not None:
        raise SpecError(Reason.INVALID_SPEC, "spec.x509: set caSecretRef or selfSigned, not both")
    if x509.get("caSecretRef") is not None:
        ref = x509["caSecretRef"]
        ca_secret = CASecretRef(ref["name"], ref.get("key", "ca.crt"), ref.get("namespace"))
    elif x509.get("selfSigned") is not None:
        raw = x509["selfSigned"]
        self_signed = SelfSignedCA(
            common_name=raw.get("commonName") or name,
            organization=raw.get("organization"),
            duration=parse_duration(
                raw.get("duration", "87600h"), field="spec.x509.selfSigned.duration"
            ),
        )
    elif "x509" in spec:
        raise SpecError(Reason.INVALID_SPEC, "spec.x509: set caSecretRef or selfSigned")
    ssh_enabled = bool((spec.get("ssh") or {}).get("enabled", "ssh" in spec))
    if ca_secret is None and self_signed is None and not ssh_enabled:
        raise SpecError(Reason.INVALID_SPEC, "an issuer must enable x509, ssh, or both")
    trust_domain = spec.get("trustDomain", "cluster.local")
    if not isinstance(trust_domain, str) or not TRUST_DOMAIN.match(trust_domain):
        raise SpecError(
            Reason.INVALID_TRUST_DOMAIN,
            f"spec.trustDomain: {str(trust_domain)[:64]!r} is not a SPIFFE trust domain",
        )
    selector = spec.get("namespaceSelector") if kind == "ClusterIssuer" else None
    return IssuerSpec(
        kind=kind,
        name=name,
        namespace=namespace,
        key_version=key_version,
        pkcs11=pkcs11,
        ca_secret=ca_secret,
        self_signed=self_signed,
        ssh_enabled=ssh_enabled,
        trust_domain=trust_domain,
        policy=_policy(spec.get("policy") or {}),
        namespace_selector=selector,
        pod_certificates=_pod_certificates(spec.get("podCertificates")),
        certificate_signing_requests=_certificate_signing_requests(
            spec.get("certificateSigningRequests")
        ),
        rotation=_rotation(spec.get("rotation")),
    )

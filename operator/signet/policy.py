"""May this namespace obtain this identity from this issuer?

Every check names the refused value and the rule that refused it, because "policy denied"
alone sends people digging; "dnsNames[1] 'web.billing.svc' matches none of
policy.allowedDNSNames ['*.shop.svc', ...]" does not.

Pattern syntax: ``{namespace}`` and ``{trustDomain}`` are replaced first. Then, for DNS
names, ``*`` stands for exactly one label; for URIs, ``*`` stands for one path segment
(or part of one) and ``**`` for the rest of the URI; for SSH principals, email addresses and
common names, ``*`` stands for any run of characters other than ``@``, ``/`` and ``,``.
Matching DNS names ignores case; everything else is exact. A pattern's ``*`` also matches a
literal ``*``, but a wildcard name (a ``*`` in a DNS name or the common name) is granted only
when the issuer also sets ``allowWildcards``: a pattern written for "any service of the
namespace" should not quietly hand out one key for all of them.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from signet.api.certificate import (
    DEFAULT_USER_SSH_EXTENSIONS,
    SSH_CRITICAL_OPTIONS,
    CertificateSpec,
    SSHSpec,
    X509Spec,
)
from signet.api.duration import format_duration
from signet.api.issuer import IssuerSpec, Policy
from signet.reasons import Reason


@dataclass(frozen=True)
class Denial:
    """Why a request was refused. ``reason`` is one CamelCase word for the condition."""

    reason: Reason
    message: str


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The SPIFFE ID Kubernetes workloads conventionally carry (as SPIRE and Istio do)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _expand(pattern: str, namespace: str, trust_domain: str) -> str:
    return pattern.replace("{namespace}", namespace).replace("{trustDomain}", trust_domain)


@lru_cache(maxsize=4096)
def _compile(pattern: str, kind: str) -> re.Pattern[str]:
    pieces = re.split(r"(\*\*|\*)", pattern)
    out = []
    for piece in pieces:
        if piece == "**" and kind == "uri":
            out.append(".*")
        elif piece in ("*", "**"):
            out.append({"dns": r"[^.]+", "uri": r"[^/?#]+"}.get(kind, r"[^@/,]+"))
        else:
            out.append(re.escape(piece))
    flags = re.IGNORECASE if kind == "dns" else 0
    return re.compile("".join(out), flags)


def _allowed(value: str, patterns: Iterable[str], kind: str, ns: str, td: str) -> bool:
    return any(_compile(_expand(p, ns, td), kind).fullmatch(value) for p in patterns)


def _listed(values: Sequence[str]) -> str:
    return "[" + ", ".join(repr(v) for v in values[:6]) + (", ...]" if len(values) > 6 else "]")


def _not_granted(rule: str, granted: Sequence[str], relation: str) -> str:
    """Why a value is refused, worded the same way by every list rule: an empty list is
    called empty (printing ``[]`` reads like a bug), otherwise the list is shown."""
    if not granted:
        return f"{rule} is empty, so none are granted"
    return f"it {relation} {rule} {_listed(granted)}"


def _check_names(
    values: Iterable[tuple[str, str]],
    patterns: tuple[str, ...],
    rule: str,
    kind: str,
    reason: Reason,
    ns: str,
    td: str,
) -> Denial | None:
    """``values`` are (subject, value): the subject is how the message names the value."""
    for subject, value in values:
        if not _allowed(value, patterns, kind, ns, td):
            expanded = [_expand(p, ns, td) for p in patterns]
            why = _not_granted(rule, expanded, "matches none of")
            return Denial(reason, f"{subject} is not allowed: {why}")
    return None


def _named(field: str, value: str) -> tuple[str, str]:
    return f"{field} {value[:256]!r}", value


def _indexed(field: str, values: Iterable[str]) -> list[tuple[str, str]]:
    return [_named(f"{field}[{index}]", value) for index, value in enumerate(values)]


def check(spec: CertificateSpec, issuer: IssuerSpec, namespace: str) -> Denial | None:
    """The first thing ``issuer``'s policy refuses to ``namespace``, or None if all granted."""
    policy = issuer.policy
    if spec.duration > policy.max_duration:
        return Denial(
            Reason.DURATION_TOO_LONG,
            f"spec.duration {format_duration(spec.duration)} exceeds policy.maxDuration "
            f"{format_duration(policy.max_duration)} of {issuer.ref}",
        )
    if spec.private_key.algorithm not in policy.allowed_key_algorithms:
        why = _not_granted(
            "policy.allowedKeyAlgorithms", policy.allowed_key_algorithms, "is not in"
        )
        return Denial(
            Reason.KEY_ALGORITHM_NOT_ALLOWED,
            f"spec.privateKey.algorithm {spec.private_key.algorithm!r} is not allowed: {why}",
        )
    if spec.x509 is not None:
        return _check_x509(spec.x509, issuer, namespace)
    if spec.ssh is not None:
        return _check_ssh(spec.ssh, issuer, namespace)
    return None


def check_pod_identity(
    issuer: IssuerSpec, namespace: str, service_account: str, key_algorithm: str
) -> Denial | None:
    """What the policy says of a pod's own identity (a PodCertificateRequest): its key
    algorithm and its SPIFFE ID, under the same rules a Certificate's SPIFFE ID meets, so
    a platform team's allowedURIs and allowedKeyAlgorithms bind both request paths alike.
    The lifetime is not refused here: it is shortened to policy.maxDuration."""
    policy = issuer.policy
    if key_algorithm not in policy.allowed_key_algorithms:
        why = _not_granted(
            "policy.allowedKeyAlgorithms", policy.allowed_key_algorithms, "is not in"
        )
        return Denial(
            Reason.UNSUPPORTED_KEY_TYPE, f"key algorithm {key_algorithm!r} is not allowed: {why}"
        )
    td = issuer.trust_domain
    svid = spiffe_id(td, namespace, service_account)
    subject = f"ServiceAccount {service_account[:253]!r} (SPIFFE ID {svid!r})"
    return _spiffe_denial(subject, svid, td, namespace) or _check_names(
        [(subject, svid)],
        policy.allowed_uris,
        "policy.allowedURIs",
        "uri",
        Reason.URI_NOT_ALLOWED,
        namespace,
        td,
    )


def check_pod_dns_names(
    issuer: IssuerSpec, namespace: str, names: Sequence[str], field: str
) -> Denial | None:
    """DNS names a pod asked for through its podCertificate volume: granted by the same
    policy.allowedDNSNames and allowWildcards rules as a Certificate's spec.x509.dnsNames,
    so a namespace gets no name by one request path that the other would refuse."""
    policy = issuer.policy
    named = _indexed(field, names)
    return _check_names(
        named,
        policy.allowed_dns_names,
        "policy.allowedDNSNames",
        "dns",
        Reason.DNS_NAME_NOT_ALLOWED,
        namespace,
        issuer.trust_domain,
    ) or _wildcard_names(named, policy)


def _check_ssh(ssh: SSHSpec, issuer: IssuerSpec, ns: str) -> Denial | None:
    """Critical options and extensions change what the certificate may do on every server
    that trusts the CA (forward ports and agents, run ~/.ssh/rc), so each one requested,
    including the defaults a spec gets without asking, must be granted by the policy."""
    policy = issuer.policy
    if not issuer.ssh_enabled:
        return Denial(Reason.SSH_NOT_ENABLED, f"{issuer.ref} does not issue SSH certificates")
    if ssh.cert_type not in policy.allowed_ssh_types:
        why = _not_granted(
            "policy.allowedSSHCertificateTypes", policy.allowed_ssh_types, "is not in"
        )
        return Denial(
            Reason.SSH_TYPE_NOT_ALLOWED, f"spec.ssh.type {ssh.cert_type!r} is not allowed: {why}"
        )
    denial = _check_names(
        _indexed("spec.ssh.principals", ssh.principals),
        policy.allowed_ssh_principals,
        "policy.allowedSSHPrincipals",
        "other",
        Reason.SSH_PRINCIPAL_NOT_ALLOWED,
        ns,
        issuer.trust_domain,
    )
    if denial:
        return denial
    requested: list[tuple[str, str, object]] = []
    if ssh.force_command is not None:
        requested.append(("forceCommand", SSH_CRITICAL_OPTIONS["forceCommand"], ssh.force_command))
    if ssh.source_address:
        requested.append(
            ("sourceAddress", SSH_CRITICAL_OPTIONS["sourceAddress"], list(ssh.source_address))
        )
    for field, option, value in requested:
        if option not in policy.allowed_ssh_critical_options:
            why = _not_granted(
                "policy.allowedSSHCriticalOptions", policy.allowed_ssh_critical_options, "is not in"
            )
            shown = repr(value)[:256]
            return Denial(
                Reason.SSH_CRITICAL_OPTION_NOT_ALLOWED,
                f"spec.ssh.criticalOptions.{field} {shown} ({option}) is not allowed: {why}",
            )
    for index, extension in enumerate(ssh.extensions):
        if extension not in policy.allowed_ssh_extensions:
            why = _not_granted(
                "policy.allowedSSHExtensions", policy.allowed_ssh_extensions, "is not in"
            )
            if ssh.extensions == DEFAULT_USER_SSH_EXTENSIONS:
                why += (
                    f"; spec.ssh.extensions defaults to {list(DEFAULT_USER_SSH_EXTENSIONS)}: "
                    "set it to [] to ask for none"
                )
            return Denial(
                Reason.SSH_EXTENSION_NOT_ALLOWED,
                f"spec.ssh.extensions[{index}] {extension!r} is not allowed: {why}",
            )
    return None


def _spiffe_denial(subject: str, uri: str, td: str, ns: str) -> Denial | None:
    """SPIFFE IDs in the issuer's trust domain are Kubernetes identities: a namespace may
    only hold its own (``/ns/<ns>/sa/<name>``), whatever allowedURIs says. Dot segments and
    case games are refused outright rather than normalised; so is percent-encoding, which
    the SPIFFE spec forbids and which a decoding verifier could read as another path."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme.lower() != "spiffe":
        return None
    if "%" in uri:
        return Denial(
            Reason.SPIFFE_ID_NOT_ALLOWED,
            f"{subject} is not a valid SPIFFE ID: SPIFFE IDs must not contain "
            "percent-encoding (a verifier that decoded '%2F' would read another path)",
        )
    if parsed.netloc.lower() != td:
        return None
    segments = parsed.path.split("/")[1:]
    if (
        parsed.netloc == td
        and len(segments) == 4
        and segments[:3] == ["ns", ns, "sa"]
        and segments[3] not in ("", ".", "..")
        and not parsed.query
        and not parsed.fragment
    ):
        return None
    return Denial(
        Reason.SPIFFE_ID_NOT_ALLOWED,
        f"{subject} is not one of this namespace's identities "
        f"spiffe://{td}/ns/{ns}/sa/<serviceAccount>",
    )


def _spiffe_in_uris(uris: Sequence[str], td: str, ns: str) -> Denial | None:
    """A SPIFFE ID listed as a plain URI SAN would make an X509-SVID without the SVID rules
    (exactly one URI, the namespace binding), so the signer never accepts one there; this
    says where it goes instead before any key is generated."""
    for index, uri in enumerate(uris):
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme.lower() != "spiffe":
            continue
        field = f"spec.x509.uris[{index}]"
        segments = parsed.path.split("/")[1:]
        if parsed.netloc == td and len(segments) == 4 and segments[:3] == ["ns", ns, "sa"]:
            hint = (
                f"set spec.x509.spiffe.serviceAccount to {segments[3][:253]!r} instead "
                "(and drop spec.x509.uris)"
            )
        else:
            hint = (
                "SPIFFE IDs are issued only through spec.x509.spiffe.serviceAccount, as "
                f"spiffe://{td}/ns/{ns}/sa/<serviceAccount>"
            )
        return Denial(
            Reason.INVALID_REQUEST,
            f"{field} {uri[:256]!r} is a SPIFFE ID, which spec.x509.uris cannot carry: {hint}",
        )
    return None


def _wildcards(x509: X509Spec, policy: Policy) -> Denial | None:
    """The common name counts too: clients that still read it treat it as a host name."""
    named = _indexed("spec.x509.dnsNames", x509.dns_names)
    if x509.common_name:
        named.append(_named("spec.x509.commonName", x509.common_name))
    return _wildcard_names(named, policy)


def _wildcard_names(named: Iterable[tuple[str, str]], policy: Policy) -> Denial | None:
    """A wildcard name is a key that answers for every host under a domain, so it takes the
    issuer's explicit opt-in even where a pattern covers the literal '*'."""
    if policy.allow_wildcards:
        return None
    for subject, value in named:
        if "*" in value:
            return Denial(
                Reason.WILDCARD_NOT_ALLOWED,
                f"{subject} is a wildcard, which is not allowed: policy.allowWildcards is false",
            )
    return None


def _check_x509(x509: X509Spec, issuer: IssuerSpec, ns: str) -> Denial | None:
    policy, td = issuer.policy, issuer.trust_domain
    if not issuer.x509_enabled:
        return Denial(Reason.X509_NOT_ENABLED, f"{issuer.ref} does not issue X.509 certificates")
    uris = _indexed("spec.x509.uris", x509.uris)
    if x509.spiffe_service_account is not None:
        svid = spiffe_id(td, ns, x509.spiffe_service_account)
        account = x509.spiffe_service_account[:253]
        uris.append((f"spec.x509.spiffe.serviceAccount {account!r} (SPIFFE ID {svid!r})", svid))
    for subject, uri in uris:
        denial = _spiffe_denial(subject, uri, td, ns)
        if denial:
            return denial
    by_dns = policy.allowed_common_names is None
    checks = (
        (
            _indexed("spec.x509.dnsNames", x509.dns_names),
            policy.allowed_dns_names,
            "policy.allowedDNSNames",
            "dns",
            Reason.DNS_NAME_NOT_ALLOWED,
        ),
        (uris, policy.allowed_uris, "policy.allowedURIs", "uri", Reason.URI_NOT_ALLOWED),
        (
            _indexed("spec.x509.emailAddresses", x509.email_addresses),
            policy.allowed_email_addresses,
            "policy.allowedEmailAddresses",
            "other",
            Reason.EMAIL_ADDRESS_NOT_ALLOWED,
        ),
        (
            [_named("spec.x509.commonName", x509.common_name)] if x509.common_name else [],
            policy.allowed_dns_names if by_dns else policy.allowed_common_names or (),
            "policy.allowedDNSNames" if by_dns else "policy.allowedCommonNames",
            "dns" if by_dns else "other",
            Reason.COMMON_NAME_NOT_ALLOWED,
        ),
    )
    for values, patterns, rule, kind, reason in checks:
        denial = _check_names(values, patterns, rule, kind, reason, ns, td)
        if denial:
            return denial
    networks = [ipaddress.ip_network(c, strict=False) for c in policy.allowed_ip_ranges]
    for index, text in enumerate(x509.ip_addresses):
        address = ipaddress.ip_address(text)
        if not any(address in network for network in networks):
            why = _not_granted("policy.allowedIPRanges", policy.allowed_ip_ranges, "is in none of")
            return Denial(
                Reason.IP_ADDRESS_NOT_ALLOWED,
                f"spec.x509.ipAddresses[{index}] {text!r} is not allowed: {why}",
            )
    for index, usage in enumerate(x509.usages):
        if usage not in policy.allowed_usages:
            why = _not_granted("policy.allowedUsages", policy.allowed_usages, "is not in")
            return Denial(
                Reason.USAGE_NOT_ALLOWED,
                f"spec.x509.usages[{index}] {usage!r} is not allowed: {why}",
            )
    return _wildcards(x509, policy) or _spiffe_in_uris(x509.uris, td, ns)


def namespace_selected(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Evaluate a Kubernetes label selector (matchLabels + matchExpressions) over labels.

    Unset or empty selects everything, as a Kubernetes LabelSelector does.
    """
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True

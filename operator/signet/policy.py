"""May this namespace obtain this identity from this issuer?

Every check names the refused value and the rule that refused it, because "policy denied"
alone sends people digging; "dnsNames[1] 'web.billing.svc' matches none of
policy.allowedDNSNames ['*.shop.svc', ...]" does not.

Pattern syntax: ``{namespace}`` and ``{trustDomain}`` are replaced first. Then, for DNS
names, ``*`` stands for exactly one label; for URIs, ``*`` stands for one path segment
(or part of one) and ``**`` for the rest of the URI; for SSH principals, email addresses and
common names, ``*`` stands for any run of characters other than ``@``, ``/`` and ``,``.
Matching DNS names ignores case; everything else is exact.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from signet.api.certificate import CertificateSpec
from signet.api.duration import format_duration
from signet.api.issuer import IssuerSpec


@dataclass(frozen=True)
class Denial:
    """Why a request was refused. ``reason`` is one CamelCase word for the condition."""

    reason: str
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


def _shown(patterns: Iterable[str], ns: str, td: str) -> str:
    expanded = [_expand(p, ns, td) for p in patterns]
    return "[" + ", ".join(repr(p) for p in expanded[:6]) + (", ...]" if len(expanded) > 6 else "]")


def _check_names(
    field: str,
    values: Iterable[str],
    patterns: tuple[str, ...],
    rule: str,
    kind: str,
    reason: str,
    ns: str,
    td: str,
) -> Denial | None:
    for index, value in enumerate(values):
        if not _allowed(value, patterns, kind, ns, td):
            if not patterns:
                why = f"{rule} is empty, so none are granted"
            else:
                why = f"it matches none of {rule} {_shown(patterns, ns, td)}"
            return Denial(reason, f"{field}[{index}] {value[:256]!r} is not allowed: {why}")
    return None


def check(spec: CertificateSpec, issuer: IssuerSpec, namespace: str) -> Denial | None:
    """The first thing ``issuer``'s policy refuses to ``namespace``, or None if all granted."""
    policy, td, ns = issuer.policy, issuer.trust_domain, namespace
    if spec.duration > policy.max_duration:
        return Denial(
            "DurationTooLong",
            f"spec.duration {format_duration(spec.duration)} exceeds policy.maxDuration "
            f"{format_duration(policy.max_duration)} of {issuer.ref}",
        )
    if spec.private_key.algorithm not in policy.allowed_key_algorithms:
        return Denial(
            "KeyAlgorithmNotAllowed",
            f"spec.privateKey.algorithm {spec.private_key.algorithm} is not in "
            f"policy.allowedKeyAlgorithms {list(policy.allowed_key_algorithms)} of {issuer.ref}",
        )
    if spec.x509 is not None:
        return _check_x509(spec, issuer, ns, td)
    if spec.ssh is not None:
        if not issuer.ssh_enabled:
            return Denial("SSHNotEnabled", f"{issuer.ref} does not issue SSH certificates")
        if spec.ssh.cert_type not in policy.allowed_ssh_types:
            return Denial(
                "SSHTypeNotAllowed",
                f"spec.ssh.type {spec.ssh.cert_type!r} is not in "
                f"policy.allowedSSHCertificateTypes {list(policy.allowed_ssh_types)}",
            )
        return _check_names(
            "spec.ssh.principals",
            spec.ssh.principals,
            policy.allowed_ssh_principals,
            "policy.allowedSSHPrincipals",
            "other",
            "SSHPrincipalNotAllowed",
            ns,
            td,
        )
    return None


def _own_spiffe_id(uri: str, td: str, ns: str) -> bool:
    """SPIFFE IDs in the issuer's trust domain are Kubernetes identities: a namespace may
    only hold its own (``/ns/<ns>/sa/<name>``), whatever allowedURIs says. Dot segments and
    case games are refused outright rather than normalised."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme.lower() != "spiffe" or parsed.netloc.lower() != td:
        return True
    segments = parsed.path.split("/")[1:]
    return (
        parsed.scheme == "spiffe"
        and parsed.netloc == td
        and len(segments) == 4
        and segments[:3] == ["ns", ns, "sa"]
        and segments[3] not in ("", ".", "..")
        and not parsed.query
        and not parsed.fragment
    )


def _check_x509(spec: CertificateSpec, issuer: IssuerSpec, ns: str, td: str) -> Denial | None:
    x509, policy = spec.x509, issuer.policy
    assert x509 is not None
    if not issuer.x509_enabled:
        return Denial("X509NotEnabled", f"{issuer.ref} does not issue X.509 certificates")
    uris = list(x509.uris)
    if x509.spiffe_service_account is not None:
        uris.append(spiffe_id(td, ns, x509.spiffe_service_account))
    for uri in uris:
        if not _own_spiffe_id(uri, td, ns):
            return Denial(
                "SPIFFEIDNotAllowed",
                f"SPIFFE ID {uri[:256]!r} is not one of this namespace's identities "
                f"spiffe://{td}/ns/{ns}/sa/<serviceAccount>",
            )
    common_name_patterns = (
        policy.allowed_common_names
        if policy.allowed_common_names is not None
        else policy.allowed_dns_names
    )
    checks = (
        (
            "spec.x509.dnsNames",
            x509.dns_names,
            policy.allowed_dns_names,
            "policy.allowedDNSNames",
            "dns",
            "DNSNameNotAllowed",
        ),
        ("spec.x509.uris", uris, policy.allowed_uris, "policy.allowedURIs", "uri", "URINotAllowed"),
        (
            "spec.x509.emailAddresses",
            x509.email_addresses,
            policy.allowed_email_addresses,
            "policy.allowedEmailAddresses",
            "other",
            "EmailAddressNotAllowed",
        ),
        (
            "spec.x509.commonName",
            [x509.common_name] if x509.common_name else [],
            common_name_patterns,
            "policy.allowedCommonNames"
            if policy.allowed_common_names is not None
            else "policy.allowedDNSNames",
            "dns" if policy.allowed_common_names is None else "other",
            "CommonNameNotAllowed",
        ),
    )
    for field, values, patterns, rule, kind, reason in checks:
        denial = _check_names(field, values, patterns, rule, kind, reason, ns, td)
        if denial:
            return denial
    networks = [ipaddress.ip_network(c, strict=False) for c in policy.allowed_ip_ranges]
    for index, text in enumerate(x509.ip_addresses):
        address = ipaddress.ip_address(text)
        if not any(address in network for network in networks):
            return Denial(
                "IPAddressNotAllowed",
                f"spec.x509.ipAddresses[{index}] {text!r} is in none of policy.allowedIPRanges "
                f"{list(policy.allowed_ip_ranges)}",
            )
    return None


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

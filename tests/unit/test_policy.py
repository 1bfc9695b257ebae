"""Policy patterns and the exact words of each denial."""

from __future__ import annotations

from typing import Any

import pytest

from signet.api.certificate import parse_certificate_spec
from signet.api.issuer import parse_issuer_spec
from signet.policy import check, namespace_selected

KEY = "projects/signet-dev/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"


def _issuer(**policy: Any) -> Any:
    return parse_issuer_spec(
        "ClusterIssuer",
        "corp",
        None,
        {
            "kms": {"cloudKMS": {"keyVersion": KEY}},
            "x509": {"selfSigned": {}},
            "ssh": {},
            "policy": policy,
        },
    )


def _x509(**x509: Any) -> Any:
    return parse_certificate_spec({"issuerRef": {"name": "corp"}, "secretName": "s", "x509": x509})


def _ssh(**ssh: Any) -> Any:
    return parse_certificate_spec(
        {
            "issuerRef": {"name": "corp"},
            "secretName": "s",
            "ssh": {"type": "user", "principals": ["shop-ops"], **ssh},
        }
    )


def _message(spec: Any, issuer: Any, reason: str) -> str:
    denial = check(spec, issuer, "shop")
    assert denial is not None and denial.reason == reason, denial
    return denial.message


@pytest.mark.parametrize(
    "names",
    [["web.shop.svc"], ["WEB.shop.svc"], ["web.shop.svc.cluster.local"]],
)
def test_default_dns_policy_grants_own_namespace(names: list[str]) -> None:
    assert check(_x509(dnsNames=names), _issuer(), "shop") is None


@pytest.mark.parametrize(
    "name",
    [
        "web.billing.svc",
        "a.web.shop.svc",
        "shop.svc",
        "web.shop.svc.evil.com",
        "web-shop.svc",
        "*.svc",
    ],
)
def test_default_dns_policy_refuses_the_rest(name: str) -> None:
    denial = check(_x509(dnsNames=[name]), _issuer(), "shop")
    assert denial is not None and denial.reason == "DNSNameNotAllowed"
    assert repr(name.lower()) in denial.message


def test_spiffe_ids_are_bound_to_the_namespace() -> None:
    assert check(_x509(spiffe={"serviceAccount": "web"}), _issuer(), "shop") is None
    for uri in [
        "spiffe://cluster.local/ns/billing/sa/web",
        "spiffe://cluster.local/ns/shop/sa/../../billing/sa/web",
        "spiffe://CLUSTER.LOCAL/ns/billing/sa/web",
        "spiffe://cluster.local/ns/shop/sa/web/extra",
        "spiffe://cluster.local/ns/shop/sa/",
    ]:
        denial = check(_x509(uris=[uri]), _issuer(allowedURIs=["spiffe://**"]), "shop")
        assert denial is not None and denial.reason == "SPIFFEIDNotAllowed", uri


def test_uri_patterns() -> None:
    issuer = _issuer(allowedURIs=["https://{namespace}.example.com/*", "urn:x:**"])
    assert check(_x509(uris=["https://shop.example.com/api"]), issuer, "shop") is None
    assert check(_x509(uris=["urn:x:a/b/c"]), issuer, "shop") is None
    denial = check(_x509(uris=["https://shop.example.com/a/b"]), issuer, "shop")
    assert denial is not None and denial.reason == "URINotAllowed"


def test_ssh_and_email_and_cn_rules() -> None:
    issuer = _issuer(allowedEmailAddresses=["*@{namespace}.example.com"])
    ssh = parse_certificate_spec(
        {
            "issuerRef": {"name": "corp"},
            "secretName": "s",
            "ssh": {"type": "user", "principals": ["shop-ops", "root"]},
        }
    )
    denial = check(ssh, issuer, "shop")
    assert denial is not None and denial.message.startswith(
        "spec.ssh.principals[1] 'root' is not allowed"
    )
    assert check(_x509(emailAddresses=["me@shop.example.com"]), issuer, "shop") is None
    denial = check(_x509(emailAddresses=["me@evil@shop.example.com"]), issuer, "shop")
    assert denial is not None and denial.reason == "EmailAddressNotAllowed"
    denial = check(_x509(commonName="admin"), issuer, "shop")
    assert denial is not None and denial.reason == "CommonNameNotAllowed"
    assert check(_x509(commonName="web.shop.svc"), issuer, "shop") is None


def test_empty_rule_grants_nothing_and_says_so() -> None:
    denial = check(_x509(dnsNames=["web.shop.svc"]), _issuer(allowedDNSNames=[]), "shop")
    assert denial is not None
    assert "policy.allowedDNSNames is empty, so none are granted" in denial.message


def test_ip_ranges_and_key_algorithms_and_duration() -> None:
    issuer = _issuer(
        allowedIPRanges=["10.0.0.0/8"], allowedKeyAlgorithms=["ECDSA"], maxDuration="48h"
    )
    assert check(_x509(ipAddresses=["10.1.2.3"]), issuer, "shop") is None
    denial = check(_x509(ipAddresses=["192.168.0.1"]), issuer, "shop")
    assert denial is not None and denial.reason == "IPAddressNotAllowed"
    rsa = parse_certificate_spec(
        {
            "issuerRef": {"name": "corp"},
            "secretName": "s",
            "privateKey": {"algorithm": "RSA"},
            "x509": {"dnsNames": ["a.shop.svc"]},
        }
    )
    denial = check(rsa, issuer, "shop")
    assert denial is not None and denial.reason == "KeyAlgorithmNotAllowed"
    long = parse_certificate_spec(
        {
            "issuerRef": {"name": "corp"},
            "secretName": "s",
            "duration": "72h",
            "x509": {"dnsNames": ["a.shop.svc"]},
        }
    )
    denial = check(long, issuer, "shop")
    assert denial is not None and denial.message == (
        "spec.duration 72h exceeds policy.maxDuration 48h of ClusterIssuer/corp"
    )


# -- wildcards: an explicit opt-in on top of the patterns ---------------------------------


@pytest.mark.parametrize(
    ("x509", "message"),
    [
        (
            {"dnsNames": ["web.shop.svc", "*.shop.svc"]},
            "spec.x509.dnsNames[1] '*.shop.svc' is a wildcard, which is not allowed: "
            "policy.allowWildcards is false",
        ),
        (
            {"dnsNames": ["*.shop.svc.cluster.local"]},
            "spec.x509.dnsNames[0] '*.shop.svc.cluster.local' is a wildcard, which is not "
            "allowed: policy.allowWildcards is false",
        ),
        (
            {"commonName": "*.shop.svc"},
            "spec.x509.commonName '*.shop.svc' is a wildcard, which is not allowed: "
            "policy.allowWildcards is false",
        ),
    ],
)
def test_wildcards_are_refused_by_default(x509: dict[str, Any], message: str) -> None:
    assert _message(_x509(**x509), _issuer(), "WildcardNotAllowed") == message


def test_wildcard_opt_in_still_needs_a_matching_pattern() -> None:
    issuer = _issuer(allowWildcards=True)
    assert check(_x509(dnsNames=["*.shop.svc"]), issuer, "shop") is None
    assert check(_x509(commonName="*.shop.svc"), issuer, "shop") is None
    message = _message(_x509(dnsNames=["*.billing.svc"]), issuer, "DNSNameNotAllowed")
    assert message.startswith("spec.x509.dnsNames[0] '*.billing.svc' is not allowed: it matches")
    # A pattern's '*' is one label, so it covers the literal '*' label but never two labels.
    assert check(_x509(dnsNames=["*.*.shop.svc"]), issuer, "shop") is not None


def test_wildcard_outside_the_patterns_is_named_as_such() -> None:
    """The name rule comes first: allowWildcards would not help '*.svc', so it is not named."""
    message = _message(_x509(dnsNames=["*.svc"]), _issuer(), "DNSNameNotAllowed")
    assert message == (
        "spec.x509.dnsNames[0] '*.svc' is not allowed: it matches none of "
        "policy.allowedDNSNames ['*.shop.svc', '*.shop.svc.cluster.local']"
    )


def test_wildcard_common_name_under_allowed_common_names() -> None:
    """A CN pattern's '*' is a glob, not a grant of a literal wildcard."""
    issuer = _issuer(allowedCommonNames=["{namespace}-*"])
    assert check(_x509(commonName="shop-web"), issuer, "shop") is None
    assert _message(_x509(commonName="shop-*"), issuer, "WildcardNotAllowed") == (
        "spec.x509.commonName 'shop-*' is a wildcard, which is not allowed: "
        "policy.allowWildcards is false"
    )


# -- SSH critical options and extensions ----------------------------------------------------


def test_ssh_defaults_fit_the_default_policy() -> None:
    """What a spec gets without asking (permit-pty) is within what an issuer grants without
    being told; a user certificate that only narrows itself (source-address) passes too."""
    assert _ssh().ssh.extensions == ("permit-pty",)
    assert check(_ssh(), _issuer(), "shop") is None
    assert check(_ssh(extensions=[]), _issuer(), "shop") is None
    assert check(_ssh(criticalOptions={"sourceAddress": ["10.0.0.0/8"]}), _issuer(), "shop") is None
    host = _ssh(type="host", principals=["shop-db"])
    assert check(host, _issuer(), "shop") is None


@pytest.mark.parametrize(
    "extension",
    [
        "permit-port-forwarding",
        "permit-agent-forwarding",
        "permit-X11-forwarding",
        "permit-user-rc",
        "no-touch-required",
    ],
)
def test_ssh_extensions_need_a_grant(extension: str) -> None:
    spec = _ssh(extensions=["permit-pty", extension])
    assert _message(spec, _issuer(), "SSHExtensionNotAllowed") == (
        f"spec.ssh.extensions[1] {extension!r} is not allowed: it is not in "
        "policy.allowedSSHExtensions ['permit-pty']"
    )
    granted = _issuer(allowedSSHExtensions=["permit-pty", extension])
    assert check(spec, granted, "shop") is None


def test_ssh_default_extension_refused_says_it_was_the_default() -> None:
    issuer = _issuer(allowedSSHExtensions=[])
    assert _message(_ssh(), issuer, "SSHExtensionNotAllowed") == (
        "spec.ssh.extensions[0] 'permit-pty' is not allowed: policy.allowedSSHExtensions is "
        "empty, so none are granted; spec.ssh.extensions defaults to ['permit-pty']: set it "
        "to [] to ask for none"
    )
    assert check(_ssh(extensions=[]), issuer, "shop") is None


def test_ssh_force_command_needs_a_grant() -> None:
    spec = _ssh(criticalOptions={"forceCommand": "uptime", "sourceAddress": ["10.0.0.0/8"]})
    assert _message(spec, _issuer(), "SSHCriticalOptionNotAllowed") == (
        "spec.ssh.criticalOptions.forceCommand 'uptime' (force-command) is not allowed: it is "
        "not in policy.allowedSSHCriticalOptions ['source-address']"
    )
    granted = _issuer(allowedSSHCriticalOptions=["force-command", "source-address"])
    assert check(spec, granted, "shop") is None
    only_command = _issuer(allowedSSHCriticalOptions=["force-command"])
    assert _message(spec, only_command, "SSHCriticalOptionNotAllowed") == (
        "spec.ssh.criticalOptions.sourceAddress ['10.0.0.0/8'] (source-address) is not "
        "allowed: it is not in policy.allowedSSHCriticalOptions ['force-command']"
    )


def test_ssh_source_address_refused_by_an_empty_rule() -> None:
    spec = _ssh(criticalOptions={"sourceAddress": ["10.0.0.0/8"]})
    message = _message(spec, _issuer(allowedSSHCriticalOptions=[]), "SSHCriticalOptionNotAllowed")
    assert message.endswith("policy.allowedSSHCriticalOptions is empty, so none are granted")


# -- messages that name the field and the rule ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "policy", "reason", "message"),
    [
        (
            {"uris": ["spiffe://cluster.local/ns/shop/sa/a"]},
            {},
            "InvalidRequest",
            "spec.x509.uris[0] 'spiffe://cluster.local/ns/shop/sa/a' is a SPIFFE ID, which "
            "spec.x509.uris cannot carry: set spec.x509.spiffe.serviceAccount to 'a' instead "
            "(and drop spec.x509.uris)",
        ),
        (
            {"uris": ["https://shop.example/", "spiffe://other.org/web"]},
            {"allowedURIs": ["https://shop.example/", "spiffe://other.org/*"]},
            "InvalidRequest",
            "spec.x509.uris[1] 'spiffe://other.org/web' is a SPIFFE ID, which spec.x509.uris "
            "cannot carry: SPIFFE IDs are issued only through spec.x509.spiffe.serviceAccount, "
            "as spiffe://cluster.local/ns/shop/sa/<serviceAccount>",
        ),
        (
            {"uris": ["spiffe://cluster.local/ns/shop/sa/..%2F..%2Fx"]},
            {},
            "SPIFFEIDNotAllowed",
            "spec.x509.uris[0] 'spiffe://cluster.local/ns/shop/sa/..%2F..%2Fx' is not a valid "
            "SPIFFE ID: SPIFFE IDs must not contain percent-encoding (a verifier that decoded "
            "'%2F' would read another path)",
        ),
        (
            {"uris": ["spiffe://cluster.local/ns/billing/sa/web"]},
            {},
            "SPIFFEIDNotAllowed",
            "spec.x509.uris[0] 'spiffe://cluster.local/ns/billing/sa/web' is not one of this "
            "namespace's identities spiffe://cluster.local/ns/shop/sa/<serviceAccount>",
        ),
        (
            {"spiffe": {"serviceAccount": "web"}},
            {"allowedURIs": []},
            "URINotAllowed",
            "spec.x509.spiffe.serviceAccount 'web' (SPIFFE ID "
            "'spiffe://cluster.local/ns/shop/sa/web') is not allowed: policy.allowedURIs is "
            "empty, so none are granted",
        ),
        (
            {"spiffe": {"serviceAccount": "a%2F..%2F..%2Fbilling"}},
            {},
            "SPIFFEIDNotAllowed",
            "spec.x509.spiffe.serviceAccount 'a%2F..%2F..%2Fbilling' (SPIFFE ID "
            "'spiffe://cluster.local/ns/shop/sa/a%2F..%2F..%2Fbilling') is not a valid SPIFFE "
            "ID: SPIFFE IDs must not contain percent-encoding",
        ),
        (
            {"commonName": "admin"},
            {},
            "CommonNameNotAllowed",
            "spec.x509.commonName 'admin' is not allowed: it matches none of "
            "policy.allowedDNSNames ['*.shop.svc', '*.shop.svc.cluster.local']",
        ),
        (
            {"commonName": "admin"},
            {"allowedCommonNames": []},
            "CommonNameNotAllowed",
            "spec.x509.commonName 'admin' is not allowed: policy.allowedCommonNames is empty, "
            "so none are granted",
        ),
        (
            {"ipAddresses": ["10.0.0.1"]},
            {},
            "IPAddressNotAllowed",
            "spec.x509.ipAddresses[0] '10.0.0.1' is not allowed: policy.allowedIPRanges is "
            "empty, so none are granted",
        ),
        (
            {"ipAddresses": ["10.0.0.1", "192.168.0.1"]},
            {"allowedIPRanges": ["10.0.0.0/8"]},
            "IPAddressNotAllowed",
            "spec.x509.ipAddresses[1] '192.168.0.1' is not allowed: it is in none of "
            "policy.allowedIPRanges ['10.0.0.0/8']",
        ),
    ],
    ids=[
        "own-spiffe-id-in-uris",
        "foreign-spiffe-id-in-uris",
        "percent-encoded-traversal",
        "other-namespace-spiffe-id",
        "spiffe-service-account-not-granted",
        "spiffe-service-account-percent",
        "common-name-single-value",
        "common-name-empty-rule",
        "ip-empty-rule",
        "ip-not-in-ranges",
    ],
)
def test_denial_messages(
    spec: dict[str, Any], policy: dict[str, Any], reason: str, message: str
) -> None:
    assert _message(_x509(**spec), _issuer(**policy), reason).startswith(message)


def test_every_list_rule_says_empty_the_same_way() -> None:
    rsa = parse_certificate_spec(
        {
            "issuerRef": {"name": "corp"},
            "secretName": "s",
            "privateKey": {"algorithm": "RSA"},
            "x509": {"dnsNames": ["a.shop.svc"]},
        }
    )
    assert _message(rsa, _issuer(allowedKeyAlgorithms=[]), "KeyAlgorithmNotAllowed") == (
        "spec.privateKey.algorithm 'RSA' is not allowed: policy.allowedKeyAlgorithms is empty, "
        "so none are granted"
    )
    assert _message(rsa, _issuer(allowedKeyAlgorithms=["ECDSA"]), "KeyAlgorithmNotAllowed") == (
        "spec.privateKey.algorithm 'RSA' is not allowed: it is not in "
        "policy.allowedKeyAlgorithms ['ECDSA']"
    )
    types = _issuer(allowedSSHCertificateTypes=[])
    assert _message(_ssh(), types, "SSHTypeNotAllowed") == (
        "spec.ssh.type 'user' is not allowed: policy.allowedSSHCertificateTypes is empty, so "
        "none are granted"
    )
    hosts = _issuer(allowedSSHCertificateTypes=["host"])
    assert _message(_ssh(), hosts, "SSHTypeNotAllowed") == (
        "spec.ssh.type 'user' is not allowed: it is not in policy.allowedSSHCertificateTypes "
        "['host']"
    )
    principals = _issuer(allowedSSHPrincipals=[])
    assert _message(_ssh(), principals, "SSHPrincipalNotAllowed") == (
        "spec.ssh.principals[0] 'shop-ops' is not allowed: policy.allowedSSHPrincipals is "
        "empty, so none are granted"
    )


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        (None, {}, True),
        ({}, {"a": "b"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        (
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
            {"env": "prod"},
            True,
        ),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}, {}, False),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, {}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, {"env": ""}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, {"env": "x"}, False),
    ],
)
def test_namespace_selector(selector: Any, labels: dict[str, str], selected: bool) -> None:
    assert namespace_selected(selector, labels) is selected

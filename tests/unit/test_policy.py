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


@pytest.mark.parametrize(
    "names",
    [["web.shop.svc"], ["WEB.shop.svc"], ["web.shop.svc.cluster.local"], ["*.shop.svc"]],
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

"""Spec parsing: what the schema cannot catch is caught here, with the field named."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from signet.api import SpecError
from signet.api.certificate import (
    SPIFFE_USAGES_RULE,
    SSH_CRITICAL_OPTIONS,
    SSH_EXTENSIONS,
    parse_certificate_spec,
)
from signet.api.duration import format_duration, parse_duration
from signet.api.issuer import parse_issuer_spec

KEY = "projects/signet-dev/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
CRDS = Path(__file__).resolve().parents[2] / "crds"


def _cert(**spec: Any) -> dict[str, Any]:
    return {
        "issuerRef": {"name": "ca"},
        "secretName": "s",
        "x509": {"dnsNames": ["a.b.svc"]},
        **spec,
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("2.5h", 9000), ("45s", 45), ("1500ms", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, field="f").total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "h", "24", "1d", "-1h", "0s", "1h 30m", "9" * 40 + "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_duration(text, field="spec.duration")
    assert error.value.reason == "InvalidDuration"
    assert "spec.duration" in error.value.message


def test_format_duration() -> None:
    assert format_duration(datetime.timedelta(hours=2160)) == "2160h"
    assert format_duration(datetime.timedelta(seconds=5430)) == "1h30m30s"


def test_defaults() -> None:
    spec = parse_certificate_spec(_cert())
    assert spec.duration == datetime.timedelta(hours=24)
    assert spec.renew_before_or_default() == datetime.timedelta(hours=8)
    assert (spec.private_key.algorithm, spec.private_key.size) == ("ECDSA", 256)
    assert spec.x509 is not None and spec.x509.usages[:2] == (
        "digital signature",
        "key encipherment",
    )


@pytest.mark.parametrize(
    ("spec", "reason", "fragment"),
    [
        ({"x509": None}, "InvalidSpec", "exactly one of spec.x509 or spec.ssh"),
        ({"ssh": {"type": "user", "principals": ["a"]}}, "InvalidSpec", "exactly one of"),
        ({"duration": "30s"}, "InvalidDuration", "between 1m and 87600h"),
        ({"renewBefore": "48h"}, "InvalidDuration", "renewBefore must be shorter"),
        ({"privateKey": {"algorithm": "DSA"}}, "UnsupportedKeyAlgorithm", "'DSA'"),
        (
            {"privateKey": {"algorithm": "RSA", "size": 1024}},
            "UnsupportedKeySize",
            "2048, 3072, 4096",
        ),
        ({"privateKey": {"algorithm": "Ed25519", "size": 256}}, "UnsupportedKeySize", "no size"),
        ({"issuerRef": {"name": "ca", "kind": "Vault"}}, "InvalidIssuerRef", "'Vault'"),
        ({"x509": {"ipAddresses": ["1.2.3.999"]}}, "InvalidSpec", "'1.2.3.999' is not an IP"),
        ({"x509": {"dnsNames": "a.b"}}, "InvalidSpec", "expected a list of strings"),
        (
            {"x509": {"spiffe": {"serviceAccount": "a"}, "uris": ["https://x"]}},
            "InvalidSpec",
            "exactly one URI",
        ),
        ({"x509": {}}, "InvalidSpec", "at least one identity"),
        (
            {"x509": {"dnsNames": ["a.example"], "usages": ["cert sign"]}},
            "UsageNotAllowed",
            "'cert sign' is refused: Signet never issues CA certificates",
        ),
        ({"x509": {"usages": ["microsoft sgc"]}}, "InvalidSpec", "unknown usage 'microsoft sgc'"),
        (
            {"x509": {"spiffe": {"serviceAccount": "a"}, "usages": ["client auth"]}},
            "InvalidSpec",
            f"spec.x509.usages ['client auth']: {SPIFFE_USAGES_RULE}",
        ),
        (
            {
                "x509": {
                    "spiffe": {"serviceAccount": "a"},
                    "usages": ["digital signature", "server auth", "code signing"],
                }
            },
            "InvalidSpec",
            "a SPIFFE X509-SVID with extended key usages must include both 'server auth' and "
            "'client auth'",
        ),
    ],
)
def test_certificate_spec_errors(spec: dict[str, Any], reason: str, fragment: str) -> None:
    raw = _cert(**spec)
    if raw.get("x509") is None:
        raw.pop("x509")
    with pytest.raises(SpecError) as error:
        parse_certificate_spec(raw)
    assert error.value.reason == reason
    assert fragment in error.value.message


def test_ssh_spec_and_host_rules() -> None:
    spec = parse_certificate_spec(
        {
            "issuerRef": {"name": "ca"},
            "secretName": "s",
            "ssh": {"type": "user", "principals": ["ns-a"]},
        }
    )
    assert spec.ssh is not None and spec.ssh.extensions == ("permit-pty",)
    with pytest.raises(SpecError, match="host certificates carry no"):
        parse_certificate_spec(
            {
                "issuerRef": {"name": "ca"},
                "secretName": "s",
                "ssh": {"type": "host", "principals": ["h"], "extensions": ["permit-pty"]},
            }
        )


def test_content_hash_ignores_what_costs_no_signature() -> None:
    base = parse_certificate_spec(_cert())
    assert (
        base.content_hash()
        == parse_certificate_spec(
            _cert(
                renewBefore="1h",
                secretTemplate={"labels": {"a": "b"}},
                privateKey={"rotationPolicy": "Never"},
            )
        ).content_hash()
    )
    assert base.content_hash() != parse_certificate_spec(_cert(duration="48h")).content_hash()
    assert (
        base.content_hash()
        != parse_certificate_spec(_cert(x509={"dnsNames": ["c.d.svc"]})).content_hash()
    )


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (
            {"issuerRef": {"name": "ca"}, "secretName": "s", "x509": {"dnsNames": ["a.b.svc"]}},
            "86160b21826f89c865fe",
        ),
        (
            {
                "issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
                "secretName": "s",
                "duration": "48h",
                "privateKey": {"algorithm": "RSA", "size": 3072},
                "x509": {
                    "commonName": "a",
                    "subject": {"organizations": ["Org"], "postalCodes": ["123"]},
                    "uris": ["spiffe://cluster.local/ns/a/sa/b"],
                    "usages": ["client auth"],
                },
            },
            "bebb828be5cd2b7e54c9",
        ),
        (
            {
                "issuerRef": {"name": "ca"},
                "secretName": "s",
                "ssh": {
                    "type": "user",
                    "principals": ["ns-a"],
                    "keyId": "k",
                    "sourceAddress": ["10.0.0.0/8"],
                },
            },
            "3b307a6f34056342a25c",
        ),
    ],
)
def test_content_hash_is_the_one_secrets_already_carry(raw: dict[str, Any], stored: str) -> None:
    """Every issued Secret stores the hash: a new value for the same spec would re-issue
    every Certificate on upgrade."""
    assert parse_certificate_spec(raw).content_hash() == stored


def test_issuer_spec() -> None:
    spec = parse_issuer_spec(
        "Issuer",
        "ca",
        "shop",
        {"kms": {"cloudKMS": {"keyVersion": KEY}}, "x509": {"selfSigned": {}}},
    )
    assert spec.self_signed is not None and spec.self_signed.common_name == "ca"
    assert spec.trust_domain == "cluster.local"
    assert spec.policy.allowed_dns_names == ("*.{namespace}.svc", "*.{namespace}.svc.cluster.local")
    assert spec.ref == "Issuer/shop/ca"
    assert not spec.ssh_enabled
    assert spec.policy.allow_wildcards is False
    assert spec.policy.allowed_ssh_extensions == ("permit-pty",)
    assert spec.policy.allowed_ssh_critical_options == ("source-address",)


def test_issuer_policy_opt_ins() -> None:
    policy = parse_issuer_spec(
        "Issuer",
        "ca",
        "shop",
        {
            "kms": {"cloudKMS": {"keyVersion": KEY}},
            "ssh": {},
            "policy": {
                "allowWildcards": True,
                "allowedSSHExtensions": ["permit-pty", "permit-agent-forwarding"],
                "allowedSSHCriticalOptions": [],
            },
        },
    ).policy
    assert policy.allow_wildcards is True
    assert policy.allowed_ssh_extensions == ("permit-pty", "permit-agent-forwarding")
    assert policy.allowed_ssh_critical_options == ()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"allowWildcards": "yes"}, "spec.policy.allowWildcards: expected true or false"),
        (
            {"allowedSSHExtensions": ["permit-everything"]},
            "spec.policy.allowedSSHExtensions: 'permit-everything' is not one of permit-pty, "
            "permit-port-forwarding, permit-agent-forwarding, permit-X11-forwarding, "
            "permit-user-rc, no-touch-required",
        ),
        (
            {"allowedSSHCriticalOptions": ["forceCommand"]},
            "spec.policy.allowedSSHCriticalOptions: 'forceCommand' is not one of force-command, "
            "source-address",
        ),
        ({"allowedSSHExtensions": "permit-pty"}, "expected a list of strings"),
    ],
)
def test_issuer_policy_names_are_checked(policy: dict[str, Any], message: str) -> None:
    """A misspelt name would silently grant nothing (or, worse, look granted in review)."""
    with pytest.raises(SpecError) as error:
        parse_issuer_spec(
            "Issuer",
            "ca",
            "shop",
            {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}, "policy": policy},
        )
    assert error.value.reason == "InvalidPolicy"
    assert message in error.value.message


@pytest.mark.parametrize(
    "usages",
    [
        None,
        ["digital signature"],
        ["digital signature", "key encipherment", "client auth", "server auth"],
    ],
)
def test_spiffe_usages_that_pass(usages: list[str] | None) -> None:
    x509: dict[str, Any] = {"spiffe": {"serviceAccount": "a"}}
    if usages is not None:
        x509["usages"] = usages
    assert parse_certificate_spec(_cert(x509=x509)).x509 is not None


def test_client_auth_only_is_fine_without_spiffe() -> None:
    spec = parse_certificate_spec(_cert(x509={"dnsNames": ["a.b.svc"], "usages": ["client auth"]}))
    assert spec.x509 is not None and spec.x509.usages == ("client auth",)


def _crd_spec(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


def test_certificate_crd_refuses_spiffe_usages_in_the_operators_words() -> None:
    """kubectl apply and Ready=False must say the same thing (the CEL rule runs on apply;
    the parser's check stays for objects that predate the rule)."""
    x509 = _crd_spec("certificates.signet.dev.yaml")["properties"]["x509"]
    messages = [v["message"] for v in x509["x-kubernetes-validations"]]
    assert SPIFFE_USAGES_RULE in messages


@pytest.mark.parametrize("crd", ["issuers.signet.dev.yaml", "clusterissuers.signet.dev.yaml"])
def test_issuer_crds_carry_the_new_policy_fields(crd: str) -> None:
    policy = _crd_spec(crd)["properties"]["policy"]["properties"]
    assert policy["allowWildcards"]["type"] == "boolean"
    assert policy["allowWildcards"]["default"] is False
    assert "Default false" in policy["allowWildcards"]["description"]
    assert policy["allowedSSHExtensions"]["items"]["enum"] == list(SSH_EXTENSIONS)
    assert "Default: permit-pty" in policy["allowedSSHExtensions"]["description"]
    options = policy["allowedSSHCriticalOptions"]
    assert options["items"]["enum"] == list(SSH_CRITICAL_OPTIONS.values())
    assert "Default: source-address" in options["description"]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {
                "kms": {"cloudKMS": {"keyVersion": "projects/x/keyRings/r"}},
                "x509": {"selfSigned": {}},
            },
            "InvalidKeyVersion",
        ),
        ({"kms": {"cloudKMS": {"keyVersion": KEY}}}, "InvalidSpec"),
        (
            {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}, "trustDomain": "Bad Domain"},
            "InvalidTrustDomain",
        ),
        (
            {
                "kms": {"cloudKMS": {"keyVersion": KEY}},
                "ssh": {},
                "policy": {"allowedIPRanges": ["x"]},
            },
            "InvalidPolicy",
        ),
    ],
)
def test_issuer_spec_errors(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_issuer_spec("Issuer", "ca", "shop", spec)
    assert error.value.reason == reason


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (
            {"labels": {"app.kubernetes.io/managed-by": "me"}},
            "'app.kubernetes.io/managed-by' is reserved",
        ),
        (
            {"annotations": {"signet.dev/serial-number": "1"}},
            "'signet.dev/serial-number' is reserved",
        ),
        ({"labels": {"team": 1}}, "expected a string"),
    ],
)
def test_secret_template_cannot_fight_over_signet_keys(
    template: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SpecError) as error:
        parse_certificate_spec(_cert(secretTemplate=template))
    assert fragment in error.value.message


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ({"labels": {"bad key!": "x"}}, "'bad key!' is not a valid key"),
        ({"labels": {"team": "not ok!"}}, "'not ok!' is not a valid label value"),
        ({"annotations": {"a/b/c": "x"}}, "'a/b/c' is not a valid key"),
        ({"labels": {"x" * 64: "y"}}, "is not a valid key"),
    ],
)
def test_secret_template_keys_are_kubernetes_names(template: dict[str, Any], fragment: str) -> None:
    """Checked before signing: a Secret the apiserver would refuse must not cost a signature."""
    with pytest.raises(SpecError) as error:
        parse_certificate_spec(_cert(secretTemplate=template))
    assert fragment in error.value.message


def test_secret_template_accepts_ordinary_metadata() -> None:
    spec = parse_certificate_spec(
        _cert(
            secretTemplate={
                "labels": {"app.kubernetes.io/part-of": "shop", "team": ""},
                "annotations": {"x.io/y": "any text!"},
            }
        )
    )
    assert spec.secret_labels == {"app.kubernetes.io/part-of": "shop", "team": ""}

"""Request validation: every refusal comes with the exact message the user will see."""

from __future__ import annotations

import datetime
import ipaddress

import pytest

from signet.pki.keys import generate_private_key, validate_public_key
from signet.pki.names import (
    validate_dns_name,
    validate_email_address,
    validate_ip_address,
    validate_uri,
)
from signet.pki.spiffe import SpiffeId, parse_spiffe_id
from signet.pki.ssh import SshCertRequest, known_hosts_line
from signet.pki.x509 import LeafRequest
from tests.pki.conftest import exact


@pytest.mark.parametrize(
    "name", ["example.com", "a.b-c.example", "*.example.com", "xn--bcher-kva.de", "localhost"]
)
def test_good_dns_names(name: str) -> None:
    assert validate_dns_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "DNS name must not be empty"),
        ("Example.com", "DNS name 'Example.com' must be lowercase"),
        ("example.com.", "DNS name 'example.com.' must not end with a dot"),
        ("a..b", "DNS name 'a..b' has an empty label"),
        ("*.com", "wildcard DNS name '*.com' needs at least two labels after '*'"),
        (
            "*.*.example.com",
            "DNS name '*.*.example.com' has a wildcard that is not the whole leftmost label",
        ),
        (
            "w*.example.com",
            "DNS name 'w*.example.com' has a wildcard that is not the whole leftmost label",
        ),
        (
            "a.*.example.com",
            "DNS name 'a.*.example.com' has a wildcard that is not the whole leftmost label",
        ),
        (
            "-a.example.com",
            (
                "DNS name '-a.example.com' has invalid label '-a'; labels are a-z, 0-9 and '-', "
                "and do not start or end with '-'"
            ),
        ),
        (
            "a_b.example.com",
            (
                "DNS name 'a_b.example.com' has invalid label 'a_b'; labels are a-z, 0-9 and '-', "
                "and do not start or end with '-'"
            ),
        ),
        (
            "bücher.de",
            "DNS name 'bücher.de' has non-ASCII label 'bücher'; use the IDNA A-label (xn--) form",
        ),
        ("10.0.0.1", "DNS name '10.0.0.1' looks like an IP address; list it as an IP address"),
        ("a" * 64 + ".com", f"DNS name '{'a' * 64}.com' has a label longer than 63 characters"),
        ("a." * 127 + "com", f"DNS name '{'a.' * 127}com' is longer than 253 characters"),
    ],
)
def test_bad_dns_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        validate_dns_name(name)


def test_ip_addresses() -> None:
    assert validate_ip_address("192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    assert validate_ip_address("2001:db8::1") == ipaddress.IPv6Address("2001:db8::1")
    with pytest.raises(ValueError, match=exact("'010.0.0.1' is not a valid IPv4 or IPv6 address")):
        validate_ip_address("010.0.0.1")
    with pytest.raises(ValueError, match=exact("'300.1.1.1' is not a valid IPv4 or IPv6 address")):
        validate_ip_address("300.1.1.1")
    with pytest.raises(
        ValueError, match=exact("'example.com' is not a valid IPv4 or IPv6 address")
    ):
        validate_ip_address("example.com")
    with pytest.raises(
        ValueError, match=exact("IP address 'fe80::1%eth0' must not have a zone index")
    ):
        validate_ip_address("fe80::1%eth0")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ops", "email address 'ops' must contain exactly one '@'"),
        ("a@b@example.com", "email address 'a@b@example.com' must contain exactly one '@'"),
        ("@example.com", "email address '@example.com' has an empty local part"),
        (
            "o ps@example.com",
            "email address 'o ps@example.com' has invalid characters in its local part",
        ),
        (
            "ops.@example.com",
            "email address 'ops.@example.com' has misplaced dots in its local part",
        ),
        (
            "ops@Example.com",
            (
                "email address 'ops@Example.com' has an invalid domain: DNS name 'Example.com' "
                "must be lowercase"
            ),
        ),
        (
            "ops@*.example.com",
            (
                "email address 'ops@*.example.com' has an invalid domain: DNS name '*.example.com' "
                "must not be a wildcard here"
            ),
        ),
    ],
)
def test_bad_email_addresses(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        validate_email_address(address)


def test_uris() -> None:
    assert validate_uri("https://example.com/a?b=c") == "https://example.com/a?b=c"
    assert validate_uri("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66")
    with pytest.raises(ValueError, match=exact("URI '/relative' must be absolute (scheme:rest)")):
        validate_uri("/relative")
    with pytest.raises(
        ValueError,
        match=exact("URI 'https://a b' must be ASCII without whitespace or control characters"),
    ):
        validate_uri("https://a b")
    with pytest.raises(
        ValueError,
        match=exact("URI 'spiffe://example.org/x' is a SPIFFE ID; set it as the SPIFFE ID instead"),
    ):
        validate_uri("spiffe://example.org/x")


def test_good_spiffe_ids() -> None:
    assert parse_spiffe_id("spiffe://example.org/ns/default/sa/web") == SpiffeId(
        "example.org", "/ns/default/sa/web"
    )
    assert parse_spiffe_id("spiffe://a_b-c.1/A.b-C_9") == SpiffeId("a_b-c.1", "/A.b-C_9")
    assert (
        str(parse_spiffe_id("spiffe://example.org", require_path=False)) == "spiffe://example.org"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "https://example.org/x",
            "SPIFFE ID 'https://example.org/x' must start with 'spiffe://' (lowercase)",
        ),
        (
            "SPIFFE://example.org/x",
            "SPIFFE ID 'SPIFFE://example.org/x' must start with 'spiffe://' (lowercase)",
        ),
        (
            "spiffe://Example.org/x",
            (
                "SPIFFE ID 'spiffe://Example.org/x' has invalid trust domain 'Example.org'; use "
                "lowercase letters, digits, '.', '-' and '_'"
            ),
        ),
        ("spiffe:///x", "SPIFFE ID 'spiffe:///x' has an empty trust domain"),
        (
            "spiffe://example.org:8443/x",
            "SPIFFE ID 'spiffe://example.org:8443/x' must not have a port or user info",
        ),
        (
            "spiffe://u@example.org/x",
            "SPIFFE ID 'spiffe://u@example.org/x' must not have a port or user info",
        ),
        (
            "spiffe://example.org",
            (
                "SPIFFE ID 'spiffe://example.org' has no path; a workload certificate needs one "
                "(e.g. spiffe://example.org/ns/default/sa/web)"
            ),
        ),
        (
            "spiffe://example.org/",
            "SPIFFE ID 'spiffe://example.org/' has an empty path segment (or a trailing '/')",
        ),
        (
            "spiffe://example.org/a//b",
            "SPIFFE ID 'spiffe://example.org/a//b' has an empty path segment (or a trailing '/')",
        ),
        (
            "spiffe://example.org/a/",
            "SPIFFE ID 'spiffe://example.org/a/' has an empty path segment (or a trailing '/')",
        ),
        (
            "spiffe://example.org/a/./b",
            "SPIFFE ID 'spiffe://example.org/a/./b' must not have '.' or '..' path segments",
        ),
        (
            "spiffe://example.org/..",
            "SPIFFE ID 'spiffe://example.org/..' must not have '.' or '..' path segments",
        ),
        (
            "spiffe://example.org/a b",
            (
                "SPIFFE ID 'spiffe://example.org/a b' has invalid path segment 'a b'; use letters, "
                "digits, '.', '-' and '_'"
            ),
        ),
        (
            "spiffe://example.org/a?b",
            "SPIFFE ID 'spiffe://example.org/a?b' must not contain a query",
        ),
        (
            "spiffe://example.org/a#b",
            "SPIFFE ID 'spiffe://example.org/a#b' must not contain a fragment",
        ),
        (
            "spiffe://example.org/a%20b",
            "SPIFFE ID 'spiffe://example.org/a%20b' must not contain percent-encoding",
        ),
        (
            "spiffe://" + "a" * 256 + "/x",
            f"SPIFFE ID 'spiffe://{'a' * 256}/x' has a trust domain longer than 255 characters",
        ),
        ("spiffe://example.org/" + "a" * 2030, "SPIFFE ID is longer than 2048 bytes"),
    ],
)
def test_bad_spiffe_ids(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        parse_spiffe_id(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {},
            (
                "certificate needs a common name or at least one DNS name, IP address, URI, email "
                "address or SPIFFE ID"
            ),
        ),
        ({"common_name": "x", "duration": datetime.timedelta(0)}, "duration must be positive"),
        ({"common_name": "x" * 65}, f"common name '{'x' * 65}' is longer than 64 characters"),
        ({"common_name": "a\nb"}, "common name 'a\\nb' must not contain control characters"),
        (
            {"common_name": "x", "countries": ("DEU",)},
            "country 'DEU' must be a two-letter ISO 3166 code",
        ),
        ({"dns_names": ("a.example", "a.example")}, "DNS name 'a.example' is listed twice"),
        ({"ip_addresses": ("::1", "0::1")}, "IP address '::1' is listed twice"),
        ({"dns_names": ("Bad.example",)}, "DNS name 'Bad.example' must be lowercase"),
        ({"ip_addresses": ("1.2.3",)}, "'1.2.3' is not a valid IPv4 or IPv6 address"),
        (
            {"common_name": "x", "usages": ("cert sign",)},
            "usage 'cert sign' is only for CA certificates",
        ),
        (
            {"common_name": "x", "usages": ("netscape sgc",)},
            "unknown or unsupported usage 'netscape sgc'",
        ),
        (
            {"common_name": "x", "usages": ("server auth", "server auth")},
            "usage 'server auth' is listed twice",
        ),
        (
            {"spiffe_id": "spiffe://example.org/a", "uris": ("https://example.org",)},
            (
                "a SPIFFE X509-SVID carries exactly one URI SAN; uris must be empty when spiffe_id "
                "is set"
            ),
        ),
        (
            {"spiffe_id": "spiffe://example.org/a", "usages": ("digital signature", "server auth")},
            (
                "a SPIFFE X509-SVID with extended key usages must include both 'server auth' and "
                "'client auth'"
            ),
        ),
        (
            {"spiffe_id": "spiffe://example.org"},
            (
                "SPIFFE ID 'spiffe://example.org' has no path; a workload certificate needs one "
                "(e.g. spiffe://example.org/ns/default/sa/web)"
            ),
        ),
    ],
)
def test_bad_leaf_requests(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        LeafRequest(**kwargs)  # type: ignore[arg-type]


def test_leaf_request_accepts_lists() -> None:
    request = LeafRequest(dns_names=["a.example"])  # type: ignore[arg-type]
    assert request.dns_names == ("a.example",)


def test_data_encipherment_needs_rsa() -> None:
    request = LeafRequest(common_name="x", usages=("data encipherment",))
    with pytest.raises(ValueError, match=exact("usage 'data encipherment' needs an RSA key")):
        request.key_usage(generate_private_key("Ed25519").public_key())


@pytest.mark.parametrize(
    ("algorithm", "size", "message"),
    [
        ("RSA", 1024, "RSA key size 1024 is not supported; use 2048, 3072 or 4096"),
        ("RSA", 8192, "RSA key size 8192 is not supported; use 2048, 3072 or 4096"),
        ("ECDSA", 224, "ECDSA key size 224 is not supported; use 256, 384 or 521"),
        ("Ed25519", 256, "Ed25519 keys have a fixed size; size must be omitted, not 256"),
        ("DSA", None, "private key algorithm 'DSA' is not supported; use RSA, ECDSA or Ed25519"),
    ],
)
def test_bad_key_parameters(algorithm: str, size: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        generate_private_key(algorithm, size)


def test_weak_public_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    with pytest.raises(
        ValueError, match=exact("RSA key size 1024 is not supported; use 2048, 3072 or 4096")
    ):
        validate_public_key(weak)
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(
        ValueError,
        match=exact("ECDSA curve secp256k1 is not supported; use P-256, P-384 or P-521"),
    ):
        validate_public_key(k1)
    x = x25519.X25519PrivateKey.generate().public_key()
    with pytest.raises(
        ValueError, match=exact("X25519PublicKey keys are not supported; use RSA, ECDSA or Ed25519")
    ):
        validate_public_key(x)


def _ssh(**overrides: object) -> SshCertRequest:
    kwargs: dict[str, object] = {
        "cert_type": "user",
        "key_id": "alice@example",
        "principals": ("alice",),
        "duration": datetime.timedelta(hours=1),
    }
    kwargs.update(overrides)
    return SshCertRequest(**kwargs)  # type: ignore[arg-type]


def test_ssh_defaults() -> None:
    assert _ssh().effective_extensions() == (
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
        "permit-pty",
        "permit-user-rc",
    )
    assert _ssh(cert_type="host", principals=("h.example",)).effective_extensions() == ()
    assert _ssh(extensions=()).effective_extensions() == ()
    request = _ssh(force_command="uptime", source_addresses=["10.0.0.0/8", "2001:db8::1"])
    assert request.critical_options() == [
        (b"force-command", b"uptime"),
        (b"source-address", b"10.0.0.0/8,2001:db8::1"),
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cert_type": "both"}, "SSH certificate type must be 'user' or 'host', not 'both'"),
        (
            {"principals": ()},
            (
                "SSH certificates need at least one principal (an empty list would be valid for "
                "every user or host)"
            ),
        ),
        ({"principals": ("alice,root",)}, "principal 'alice,root' must not contain a comma"),
        ({"principals": ("alice root",)}, "principal 'alice root' must not contain whitespace"),
        (
            {"principals": ("alice\nroot",)},
            "principal 'alice\\nroot' must not contain control characters",
        ),
        (
            {"principals": ("alice\x00",)},
            "principal 'alice\\x00' must not contain control characters",
        ),
        ({"principals": ("",)}, "principal must not be empty"),
        ({"principals": ("ålice",)}, "principal 'ålice' must be ASCII"),
        ({"principals": ("a" * 256,)}, f"principal '{'a' * 256}' is longer than 255 characters"),
        ({"principals": ("alice", "alice")}, "principal 'alice' is listed twice"),
        ({"principals": tuple(f"u{i}" for i in range(257))}, "at most 256 principals are allowed"),
        ({"key_id": ""}, "key id must not be empty"),
        ({"key_id": "x\ny"}, "key id 'x\\ny' must be printable ASCII"),
        ({"duration": datetime.timedelta(seconds=-1)}, "duration must be positive"),
        ({"force_command": "ls\nrm -rf /"}, "force-command must not contain NUL or line breaks"),
        ({"force_command": "  "}, "force-command must not be empty"),
        (
            {"source_addresses": ("10.0.0.1/8",)},
            "source address '10.0.0.1/8' has host bits set; use '10.0.0.0/8'",
        ),
        (
            {"source_addresses": ("10.0.0.0/8,10.1.0.0/16",)},
            (
                "source address '10.0.0.0/8,10.1.0.0/16' must be a single address or CIDR block; "
                "give a list instead of commas"
            ),
        ),
        (
            {"source_addresses": ("example.com",)},
            "source address 'example.com' is not an IP address or CIDR block",
        ),
        (
            {"source_addresses": ("10.0.0.0/33",)},
            "source address '10.0.0.0/33' is not an IP address or CIDR block",
        ),
        (
            {"extensions": ("permit-everything",)},
            (
                "unknown SSH certificate extension 'permit-everything'; use one of "
                "no-touch-required, permit-X11-forwarding, permit-agent-forwarding, "
                "permit-port-forwarding, permit-pty, permit-user-rc"
            ),
        ),
        (
            {"extensions": ("permit-pty", "permit-pty")},
            "SSH certificate extension 'permit-pty' is listed twice",
        ),
        (
            {"cert_type": "host", "force_command": "ls"},
            "host certificates cannot have critical options",
        ),
        (
            {"cert_type": "host", "extensions": ("permit-pty",)},
            "host certificates cannot have extensions",
        ),
    ],
)
def test_bad_ssh_requests(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=exact(message)):
        _ssh(**overrides)


def test_known_hosts_patterns() -> None:
    key = generate_private_key("Ed25519").public_key()
    line = known_hosts_line(key, ["*.example.com", "[h]:2222"], comment="signet")
    assert line.startswith("@cert-authority *.example.com,[h]:2222 ssh-ed25519 AAAA")
    assert line.endswith(" signet")
    with pytest.raises(
        ValueError, match=exact("host pattern 'a,b' must be non-empty and without commas")
    ):
        known_hosts_line(key, ["a,b"])
    with pytest.raises(ValueError, match=exact("host pattern 'a b' must not contain spaces")):
        known_hosts_line(key, ["a b"])
    with pytest.raises(ValueError, match=exact("known_hosts line needs at least one host pattern")):
        known_hosts_line(key, [])

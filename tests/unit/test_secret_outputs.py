"""cert-manager's Secret outputs: parsing, the decision to rewrite them without a signature,
and the bytes themselves, judged by OpenSSL and, where installed, Java's keytool."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signet.api import SpecError
from signet.api.certificate import parse_certificate_spec
from signet.api.issuer import parse_issuer_spec
from signet.api.outputs import JKS_REFUSED, PKCS12Keystore, SecretOutputs
from signet.decisions.certificate import Action, CertificateView, IssuerKey, decide
from signet.decisions.leaf import leaf_request
from signet.pki import keys
from signet.policy import check
from signet.secretformat import layout
from signet.secretformat.outputs import expected_keys, pem_encoding, render
from signet.secretformat.summary import SecretSummary, summarize

PEM = serialization.Encoding.PEM
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
KEY_VERSION = "projects/p-signet/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
PASSWORD = "it's 'quoted' & long"


def _spec(**spec: Any) -> Any:
    return parse_certificate_spec(
        {"issuerRef": {"name": "ca"}, "secretName": "web-tls", "x509": {"dnsNames": ["w.s.svc"]}}
        | spec
    )


def _refused(**spec: Any) -> SpecError:
    with pytest.raises(SpecError) as error:
        _spec(**spec)
    return error.value


# -- parsing ---------------------------------------------------------------------------------
def test_defaults_ask_for_nothing_beyond_cert_managers_layout() -> None:
    outputs = _spec().outputs
    assert outputs == SecretOutputs()
    assert outputs.key_encoding == "PKCS1"
    assert outputs.fingerprint() is None
    assert expected_keys(outputs) == ()


def test_keystore_and_formats_are_parsed() -> None:
    outputs = _spec(
        privateKey={"algorithm": "RSA", "encoding": "PKCS8"},
        keystores={
            "pkcs12": {
                "create": True,
                "passwordSecretRef": {"name": "p", "key": "password"},
                "profile": "Modern2023",
            },
            "jks": {"create": False},
        },
        additionalOutputFormats=[{"type": "DER"}, {"type": "CombinedPEM"}],
    ).outputs
    assert outputs.key_encoding == "PKCS8"
    assert outputs.pkcs12 is not None and outputs.pkcs12.profile == "Modern2023"
    assert outputs.pkcs12.password_secret is not None
    assert outputs.pkcs12.password_secret.name == "p"
    assert expected_keys(outputs) == (
        "keystore.p12",
        "truststore.p12",
        "tls-combined.pem",
        "key.der",
    )


def test_outputs_are_not_part_of_the_content_hash() -> None:
    """Changing them rewrites the Secret; it must not look like a spec change (a signature)."""
    plain = _spec()
    dressed = _spec(
        privateKey={"encoding": "PKCS8"},
        keystores={"pkcs12": {"create": True, "password": "changeit"}},
        additionalOutputFormats=[{"type": "DER"}],
    )
    assert plain.content_hash() == dressed.content_hash()
    assert dressed.outputs.fingerprint() not in (None, plain.outputs.fingerprint())


def test_a_literal_password_stays_out_of_the_fingerprint_and_the_repr() -> None:
    one = _spec(keystores={"pkcs12": {"create": True, "password": PASSWORD}})
    two = _spec(keystores={"pkcs12": {"create": True, "password": "other"}})
    assert one.outputs.fingerprint() == two.outputs.fingerprint()
    assert PASSWORD not in repr(one)
    profile = _spec(keystores={"pkcs12": {"create": True, "password": "x", "profile": "LegacyDES"}})
    assert profile.outputs.fingerprint() != one.outputs.fingerprint()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"keystores": {"jks": {"create": True}}}, JKS_REFUSED),
        ({"keystores": {"pkcs12": {"create": True}}}, "spec.keystores.pkcs12: set exactly one"),
        (
            {
                "keystores": {
                    "pkcs12": {
                        "create": True,
                        "password": "a",
                        "passwordSecretRef": {"name": "p", "key": "k"},
                    }
                }
            },
            "spec.keystores.pkcs12: set exactly one",
        ),
        (
            {"keystores": {"pkcs12": {"create": True, "password": "a", "profile": "RC4"}}},
            "spec.keystores.pkcs12.profile: 'RC4'",
        ),
        (
            {"keystores": {"pkcs12": {"create": True, "passwordSecretRef": {"name": "p"}}}},
            "spec.keystores.pkcs12.passwordSecretRef.key",
        ),
        ({"privateKey": {"encoding": "PEM"}}, "spec.privateKey.encoding: 'PEM'"),
        ({"additionalOutputFormats": [{"type": "PFX"}]}, "additionalOutputFormats[0].type"),
        (
            {"additionalOutputFormats": [{"type": "DER"}, {"type": "DER"}]},
            "additionalOutputFormats[1].type: DER is listed twice",
        ),
    ],
)
def test_bad_outputs_are_refused_naming_the_field(spec: dict[str, Any], fragment: str) -> None:
    error = _refused(**spec)
    assert error.reason == "InvalidSpec"
    assert fragment in error.message


def test_ssh_certificates_take_no_x509_outputs() -> None:
    with pytest.raises(SpecError, match=r"X\.509 certificates only"):
        parse_certificate_spec(
            {
                "issuerRef": {"name": "ca"},
                "secretName": "s",
                "ssh": {"type": "user", "principals": ["a"]},
                "additionalOutputFormats": [{"type": "DER"}],
            }
        )


# -- subject and usages ----------------------------------------------------------------------
def test_every_cert_manager_subject_attribute_in_go_order() -> None:
    spec = _spec(
        x509={
            "commonName": "w.s.svc",
            "subject": {
                "organizations": ["Shop"],
                "organizationalUnits": ["Web"],
                "countries": ["DE"],
                "localities": ["Berlin"],
                "provinces": ["BE"],
                "streetAddresses": ["Unter den Linden 1"],
                "postalCodes": ["10117"],
                "serialNumber": "DEV-0001",
            },
        }
    )
    subject = leaf_request(spec.x509, spiffe_id=None, duration=spec.duration).subject()
    assert subject.rfc4514_string() == (
        "2.5.4.5=DEV-0001,CN=w.s.svc,OU=Web,O=Shop,2.5.4.17=10117,"
        "STREET=Unter den Linden 1,L=Berlin,ST=BE,C=DE"
    )
    assert _spec().content_hash() != spec.content_hash()


def test_a_subject_serial_number_must_be_printable() -> None:
    spec = _spec(x509={"dnsNames": ["w.s.svc"], "subject": {"serialNumber": "Nr. 1 ü"}})
    with pytest.raises(ValueError, match="PrintableString"):
        leaf_request(spec.x509, spiffe_id=None, duration=spec.duration)


@pytest.mark.parametrize("usage", ["cert sign", "crl sign"])
def test_ca_usages_are_refused(usage: str) -> None:
    error = _refused(x509={"dnsNames": ["w.s.svc"], "usages": ["digital signature", usage]})
    assert error.reason == "UsageNotAllowed"
    assert "spec.x509.usages" in error.message
    assert "never issues CA certificates" in error.message


def _issuer(**policy: Any) -> Any:
    return parse_issuer_spec(
        "Issuer",
        "ca",
        "shop",
        {
            "kms": {"cloudKMS": {"keyVersion": KEY_VERSION}},
            "x509": {"selfSigned": {}},
            "policy": policy,
        },
    )


def test_usages_that_widen_need_the_issuers_grant() -> None:
    spec = _spec(x509={"dnsNames": ["w.shop.svc"], "usages": ["digital signature", "timestamping"]})
    denial = check(spec, _issuer(), "shop")
    assert denial is not None and denial.reason == "UsageNotAllowed"
    assert "spec.x509.usages[1] 'timestamping'" in denial.message
    assert "policy.allowedUsages" in denial.message
    assert check(spec, _issuer(allowedUsages=["digital signature", "timestamping"]), "shop") is None
    narrow = _spec(x509={"dnsNames": ["w.shop.svc"], "usages": ["key agreement", "s/mime"]})
    assert check(narrow, _issuer(), "shop") is None


def test_an_unknown_allowed_usage_is_an_invalid_policy() -> None:
    with pytest.raises(SpecError, match=r"spec\.policy\.allowedUsages: 'cert sign'"):
        _issuer(allowedUsages=["cert sign"])


# -- the decision: rewrite, never re-sign ----------------------------------------------------
def _summary(spec: Any, **changes: Any) -> SecretSummary:
    annotations = {
        layout.CERTIFICATE_NAME: "web",
        layout.ISSUER_NAME: "ca",
        layout.ISSUER_KIND: "Issuer",
        layout.KEY_VERSION: KEY_VERSION,
        layout.SPEC_HASH: spec.content_hash(),
        layout.ISSUED_AT: "2026-11-26T11:00:00Z",
    }
    fingerprint = spec.outputs.fingerprint()
    if fingerprint:
        annotations[layout.OUTPUTS] = fingerprint
    base = SecretSummary(
        namespace="shop",
        name="web-tls",
        resource_version="7",
        secret_type=layout.TLS_TYPE,
        labels={layout.MANAGED_BY_LABEL: layout.MANAGED_BY},
        annotations=annotations,
        owner_uid="uid-1",
        serial="01",
        not_before=NOW - datetime.timedelta(hours=1),
        not_after=NOW + datetime.timedelta(hours=23),
        ca_key_id="ab12",
        output_keys=expected_keys(spec.outputs),
    )
    return dataclasses.replace(base, **changes)


KEYSTORE = {"pkcs12": {"create": True, "password": "changeit"}}


def _decide(spec: Any, secret: SecretSummary) -> Any:
    return decide(
        CertificateView("shop", "web", "uid-1", spec), secret, IssuerKey(KEY_VERSION, "ab12"), NOW
    )


@pytest.mark.parametrize(
    ("written_for", "now_asks", "changes", "message"),
    [
        ({}, {"keystores": KEYSTORE}, {}, "written for other keystores"),
        ({"keystores": KEYSTORE}, {}, {}, "written for other keystores"),
        ({}, {"privateKey": {"encoding": "PKCS8"}}, {}, "privateKey.encoding"),
        (
            {"keystores": KEYSTORE},
            {"keystores": KEYSTORE},
            {"output_keys": ("truststore.p12",)},
            "lacks keystore.p12",
        ),
        ({}, {}, {"output_keys": ("key.der",)}, "holds key.der, which the spec does not ask"),
    ],
)
def test_output_changes_rewrite_without_a_signature(
    written_for: dict[str, Any], now_asks: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    decision = _decide(_spec(**now_asks), _summary(_spec(**written_for), **changes))
    assert (decision.action, decision.reason) == (Action.REWRITE_OUTPUTS, "SecretOutputsMismatch")
    assert message in decision.message
    assert decision.wake_at is not None


def test_secrets_from_before_outputs_existed_are_left_alone() -> None:
    """No annotation, no output keys, default spec: an upgrade rewrites nothing."""
    spec = _spec()
    decision = _decide(spec, _summary(spec))
    assert (decision.action, decision.reason) == (Action.NOTHING, "UpToDate")


def test_a_due_renewal_wins_over_a_rewrite() -> None:
    spec = _spec(keystores=KEYSTORE)
    late = _summary(_spec(), not_after=NOW + datetime.timedelta(minutes=1))
    assert _decide(spec, late).action is Action.ISSUE


# -- the bytes -------------------------------------------------------------------------------
def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outputs Test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _data(algorithm: str, size: int | None, encoding: str = "PKCS8") -> dict[str, bytes]:
    ca_key, ca = _ca()
    key = keys.generate_private_key(algorithm, size)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w.s.svc")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    return {
        "tls.crt": leaf.public_bytes(PEM),
        "tls.key": keys.private_key_to_pem(key, encoding),
        "ca.crt": ca.public_bytes(PEM),
    }


@pytest.mark.parametrize(
    ("algorithm", "size", "label"),
    [
        ("RSA", 2048, b"-----BEGIN RSA PRIVATE KEY-----"),
        ("ECDSA", 256, b"-----BEGIN EC PRIVATE KEY-----"),
        ("Ed25519", None, b"-----BEGIN PRIVATE KEY-----"),
    ],
)
def test_encodings_follow_cert_manager(algorithm: str, size: int | None, label: bytes) -> None:
    data = _data(algorithm, size)
    pkcs1 = render(data, SecretOutputs(), None)
    assert pkcs1["tls.key"].startswith(label)
    back = render(pkcs1, SecretOutputs(encoding="PKCS8"), None)
    assert back["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pem_encoding(back["tls.key"]) == "PKCS8"
    assert (
        keys.load_private_key(back["tls.key"]).public_key()
        == keys.load_private_key(data["tls.key"]).public_key()
    )


def _openssl(*args: str) -> str:
    """stdout, and stderr after it (where ``pkcs12 -info`` tells the algorithms)."""
    result = subprocess.run(["openssl", *args], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode() + result.stderr.decode()


def _public_pem(key_pem_path: Path, *inform: str) -> str:
    return _openssl("pkey", *inform, "-in", str(key_pem_path), "-pubout")


@pytest.mark.parametrize(
    ("profile", "shown"),
    [
        ("LegacyRC2", "pbeWithSHA1And3-KeyTripleDES-CBC"),
        ("LegacyDES", "pbeWithSHA1And3-KeyTripleDES-CBC"),
        ("Modern2023", "AES-256-CBC"),
    ],
)
def test_keystores_hold_what_tls_key_and_tls_crt_hold(
    tmp_path: Path, profile: str, shown: str
) -> None:
    data = _data("RSA", 2048)
    outputs = SecretOutputs(
        pkcs12=PKCS12Keystore(password=PASSWORD, profile=profile),
        formats=("CombinedPEM", "DER"),
    )
    rendered = render(data, outputs, PASSWORD.encode())
    assert set(rendered) == {"tls.crt", "tls.key", "ca.crt", *expected_keys(outputs)}
    for name, value in rendered.items():
        (tmp_path / name).write_bytes(value)
    keystore, password = str(tmp_path / "keystore.p12"), f"pass:{PASSWORD}"
    info = _openssl("pkcs12", "-info", "-noout", "-in", keystore, "-passin", password)
    assert shown in info
    dumped = _openssl("pkcs12", "-in", keystore, "-nodes", "-passin", password)
    (tmp_path / "dumped.pem").write_text(dumped)
    assert _public_pem(tmp_path / "dumped.pem") == _public_pem(tmp_path / "tls.key")
    certificates = x509.load_pem_x509_certificates(dumped.encode())
    assert certificates[0] == x509.load_pem_x509_certificate(data["tls.crt"])
    assert x509.load_pem_x509_certificate(data["ca.crt"]) in certificates
    wrong = subprocess.run(
        ["openssl", "pkcs12", "-in", keystore, "-nodes", "-passin", "pass:wrong"],
        capture_output=True,
        check=False,
    )
    assert wrong.returncode != 0
    truststore = _openssl(
        "pkcs12", "-in", str(tmp_path / "truststore.p12"), "-nokeys", "-passin", password
    )
    assert x509.load_pem_x509_certificates(truststore.encode()) == [
        x509.load_pem_x509_certificate(data["ca.crt"])
    ]
    assert rendered["tls-combined.pem"] == rendered["tls.key"] + b"\n" + data["tls.crt"]
    assert _public_pem(tmp_path / "key.der", "-inform", "DER") == _public_pem(tmp_path / "tls.key")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="Java keytool is not installed")
def test_java_reads_the_keystore_and_trusts_the_truststore(tmp_path: Path) -> None:
    data = _data("ECDSA", 256)
    rendered = render(
        data, SecretOutputs(pkcs12=PKCS12Keystore(password=PASSWORD)), PASSWORD.encode()
    )
    for name in ("keystore.p12", "truststore.p12"):
        (tmp_path / name).write_bytes(rendered[name])

    def keytool(name: str, store_type: str) -> str:
        result = subprocess.run(
            ["keytool", "-list", "-keystore", str(tmp_path / name), "-storetype", store_type],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "PrivateKeyEntry" in keytool("keystore.p12", "PKCS12")
    assert "trustedCertEntry" in keytool("truststore.p12", "PKCS12")
    # What Java 9+ does for an application that still says "JKS": read the PKCS#12 file.
    assert "PrivateKeyEntry" in keytool("keystore.p12", "JKS")


def test_a_keystore_without_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty password"):
        render(_data("ECDSA", 256), SecretOutputs(pkcs12=PKCS12Keystore(password="x")), b"")


def test_summaries_name_the_outputs_a_secret_holds() -> None:
    data = _data("ECDSA", 256)
    rendered = render(data, SecretOutputs(formats=("DER",)), None)
    secret = {
        "type": layout.TLS_TYPE,
        "metadata": {"namespace": "shop", "name": "web-tls"},
        "data": {k: base64.b64encode(v).decode() for k, v in rendered.items()},
    }
    summary = summarize(secret)
    assert summary.problem is None
    assert summary.output_keys == ("key.der",)
    assert summarize({**secret, "data": dict(list(secret["data"].items())[:3])}).output_keys == ()

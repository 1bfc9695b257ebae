"""User-supplied CA chains: a root and an intermediate, both KMS keys, and bad chains."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.pki.chain import parse_ca_chain
from signet.pki.keys import generate_private_key, private_key_to_pem
from signet.pki.x509 import LeafRequest, build_intermediate_ca, build_leaf, build_self_signed_ca
from tests.pki.conftest import CaFactory, exact, openssl_verify

ROOT_ALG = "EC_SIGN_P384_SHA384"
INTERMEDIATE_ALG = "RSA_SIGN_PSS_3072_SHA256"


@dataclass
class TwoLevel:
    root: x509.Certificate
    intermediate: x509.Certificate


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def two_level(kms_ca: CaFactory) -> TwoLevel:
    """Root (KMS key A, self-signed, pathlen 1) over an intermediate (KMS key B)."""
    root_ca = kms_ca(ROOT_ALG)
    root = root_ca.sign(
        lambda key: build_self_signed_ca(
            key, "Signet chain root", datetime.timedelta(days=365), path_length=1
        )
    )
    intermediate_key = kms_ca(INTERMEDIATE_ALG).certificate.public_key()
    intermediate = root_ca.sign(
        lambda key: build_intermediate_ca(
            intermediate_key,
            "Signet chain intermediate",
            datetime.timedelta(days=90),
            root,
            key,
            trust_domain="example.org",
        )
    )
    return TwoLevel(root, intermediate)


def test_chain_is_accepted_and_issues_verifiable_leaves(
    two_level: TwoLevel, kms_ca: CaFactory, tmp_path: Path
) -> None:
    kms_b = kms_ca(INTERMEDIATE_ALG)
    chain = parse_ca_chain(
        pem(two_level.intermediate, two_level.root), kms_b.certificate.public_key()
    )
    assert chain.issuer == two_level.intermediate
    assert chain.root == two_level.root
    assert chain.intermediates == (two_level.intermediate,)
    assert chain.trust_anchor == two_level.root

    leaf_key = generate_private_key("ECDSA", 256)
    leaf = kms_b.sign(
        lambda key: build_leaf(
            LeafRequest(dns_names=("svc.example.com",)), leaf_key.public_key(), chain.issuer, key
        )
    )
    result = openssl_verify(tmp_path, two_level.root, leaf, chain.intermediates)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the intermediate the leaf does not verify: the chain really is needed.
    alone = openssl_verify(tmp_path, two_level.root, leaf)
    assert alone.returncode != 0
    tls_crt = chain.leaf_chain_pem(leaf)
    assert x509.load_pem_x509_certificates(tls_crt) == [leaf, two_level.intermediate]


def test_chain_without_root_is_accepted(two_level: TwoLevel, kms_ca: CaFactory) -> None:
    chain = parse_ca_chain(
        pem(two_level.intermediate).decode(), kms_ca(INTERMEDIATE_ALG).certificate.public_key()
    )
    assert chain.root is None
    assert chain.intermediates == (two_level.intermediate,)
    assert chain.trust_anchor == two_level.intermediate


def test_root_alone_is_accepted(kms_ca: CaFactory) -> None:
    ca = kms_ca("EC_SIGN_ED25519")
    chain = parse_ca_chain(ca.pem, ca.certificate.public_key())
    assert chain.root == ca.certificate and chain.intermediates == ()


def test_root_with_path_length_zero_cannot_have_intermediates(kms_ca: CaFactory) -> None:
    root_ca = kms_ca("EC_SIGN_P256_SHA256")  # bootstrapped with pathlen 0
    with pytest.raises(
        ValueError,
        match=exact(
            "issuer 'CN=Signet test CA EC_SIGN_P256_SHA256' has path length 0 and cannot sign CAs"
        ),
    ):
        root_ca.sign(
            lambda key: build_intermediate_ca(
                kms_ca(ROOT_ALG).certificate.public_key(),
                "x",
                datetime.timedelta(days=1),
                root_ca.certificate,
                key,
            )
        )


@dataclass
class Bad:
    data: bytes
    message: str


def test_bad_chains_are_refused(two_level: TwoLevel, kms_ca: CaFactory) -> None:
    kms_b = kms_ca(INTERMEDIATE_ALG).certificate.public_key()
    root, inter = two_level.root, two_level.intermediate
    unrelated = kms_ca("EC_SIGN_P256_SHA256").certificate
    key_pem = private_key_to_pem(generate_private_key("ECDSA", 256))
    leaf_key = generate_private_key("Ed25519")
    leaf = kms_ca(INTERMEDIATE_ALG).sign(
        lambda key: build_leaf(LeafRequest(common_name="leaf"), leaf_key.public_key(), inter, key)
    )
    body = pem(inter).splitlines()
    broken = b"\n".join([body[0], body[1][:10] + b"!!!" + body[1][13:], *body[2:]])
    cases = [
        Bad(b"", "CA chain contains no PEM certificates"),
        Bad(b"not a certificate at all", "CA chain contains no PEM certificates"),
        Bad(
            pem(inter) + key_pem,
            "CA chain contains a 'PRIVATE KEY' PEM block; only CERTIFICATE blocks are allowed",
        ),
        Bad(broken, "CA chain contains a certificate that is not valid PEM/DER"),
        Bad(
            pem(root, inter),
            "the first certificate in the CA chain ('CN=Signet chain root') is not for the KMS key",
        ),
        Bad(
            pem(inter, unrelated),
            "certificate 'CN=Signet chain intermediate' is issued by 'CN=Signet chain root', "
            "but the next certificate in the CA chain is 'CN=Signet test CA EC_SIGN_P256_SHA256'",
        ),
        Bad(
            pem(inter, inter),
            "certificate 'CN=Signet chain intermediate' is issued by 'CN=Signet chain root', "
            "but the next certificate in the CA chain is 'CN=Signet chain intermediate'",
        ),
        Bad(
            pem(inter, root, root),
            "self-signed certificate 'CN=Signet chain root' must be the last one in the CA chain",
        ),
        Bad(pem(inter) * 11, "CA chain has 11 certificates; at most 10"),
    ]
    for case in cases:
        with pytest.raises(ValueError, match=exact(case.message)):
            parse_ca_chain(case.data, kms_b)
    leaf_as_ca = leaf.public_key()
    with pytest.raises(
        ValueError, match=exact("certificate 'CN=leaf' is not a CA (basicConstraints cA false)")
    ):
        parse_ca_chain(pem(leaf, inter, root), leaf_as_ca)
    with pytest.raises(
        ValueError,
        match=exact(
            f"certificate 'CN=Signet chain intermediate' expired at "
            f"{inter.not_valid_after_utc.isoformat()}"
        ),
    ):
        parse_ca_chain(
            pem(inter, root), kms_b, now=inter.not_valid_after_utc + datetime.timedelta(days=1)
        )
    with pytest.raises(
        ValueError,
        match=exact(
            f"certificate 'CN=Signet chain intermediate' is not valid before "
            f"{inter.not_valid_before_utc.isoformat()}"
        ),
    ):
        parse_ca_chain(
            pem(inter, root), kms_b, now=inter.not_valid_before_utc - datetime.timedelta(days=1)
        )


def test_forged_signature_is_refused(two_level: TwoLevel, kms_ca: CaFactory) -> None:
    """Same names, wrong key: a root look-alike made by another KMS key."""
    impostor_ca = kms_ca("EC_SIGN_ED25519")
    impostor_root = impostor_ca.sign(
        lambda key: build_self_signed_ca(
            key, "Signet chain root", datetime.timedelta(days=365), path_length=1
        )
    )
    with pytest.raises(
        ValueError,
        match=exact(
            "certificate 'CN=Signet chain intermediate' is not signed by the key of "
            "'CN=Signet chain root'"
        ),
    ):
        parse_ca_chain(
            pem(two_level.intermediate, impostor_root),
            kms_ca(INTERMEDIATE_ALG).certificate.public_key(),
        )

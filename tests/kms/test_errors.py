"""Status codes the emulator returns, and how the signer reports them."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import kms_v1
from google.protobuf import field_mask_pb2

from signet.kms.cloudkms import RetryPolicy
from signet.kms.crc import crc32c
from signet.kms.emulator import Counters, Faults
from signet.kms.errors import KmsError, KmsKeyDisabled, KmsKeyNotFound, KmsPermissionDenied
from tests.kms_fixtures import TEST_KEY_RING, TEST_LOCATION, TEST_PROJECT, KeyFactory, KmsRunner

P256 = "EC_SIGN_P256_SHA256"
RING = f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}/keyRings/{TEST_KEY_RING}"


def _asym_key(algorithm: str) -> kms_v1.CryptoKey:
    return kms_v1.CryptoKey(
        purpose="ASYMMETRIC_SIGN",
        version_template=kms_v1.CryptoKeyVersionTemplate(algorithm=algorithm),
    )


@pytest.mark.parametrize(
    "name",
    [
        "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/one",
        "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/0",
        "projects/p/locations/global/keyRings/r/cryptoKeys/k",
        "projects/p/locations/global/keyRings/bad!ring/cryptoKeys/k/cryptoKeyVersions/1",
        "keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
    ],
)
def test_malformed_names_are_invalid_argument(
    name: str, kms_admin: kms_v1.KeyManagementServiceClient
) -> None:
    with pytest.raises(gexc.InvalidArgument, match="does not match"):
        kms_admin.get_crypto_key_version(name=name, retry=None)
    with pytest.raises(gexc.InvalidArgument):
        kms_admin.asymmetric_sign(name=name, digest=kms_v1.Digest(sha256=b"\0" * 32), retry=None)


def test_ids_are_validated_and_duplicates_rejected(
    kms_admin: kms_v1.KeyManagementServiceClient, kms_key_factory: KeyFactory
) -> None:
    kms_key_factory(P256)  # ensures the ring exists
    parent = f"projects/{TEST_PROJECT}/locations/{TEST_LOCATION}"
    with pytest.raises(gexc.InvalidArgument, match="must match"):
        kms_admin.create_key_ring(
            parent=parent, key_ring_id="x" * 64, key_ring=kms_v1.KeyRing(), retry=None
        )
    with pytest.raises(gexc.AlreadyExists):
        kms_admin.create_key_ring(
            parent=parent, key_ring_id=TEST_KEY_RING, key_ring=kms_v1.KeyRing()
        )
    with pytest.raises(gexc.AlreadyExists):
        kms_admin.create_crypto_key(
            parent=RING,
            crypto_key_id=P256.lower().replace("_", "-"),
            crypto_key=_asym_key(P256),
        )
    with pytest.raises(gexc.InvalidArgument, match="ASYMMETRIC_SIGN"):
        kms_admin.create_crypto_key(
            parent=RING,
            crypto_key_id="symmetric",
            crypto_key=kms_v1.CryptoKey(purpose="ENCRYPT_DECRYPT"),
        )
    with pytest.raises(gexc.NotFound):
        kms_admin.create_crypto_key(
            parent=f"{parent}/keyRings/nope",
            crypto_key_id="k",
            crypto_key=_asym_key(P256),
        )


def test_listing_and_versions(
    kms_admin: kms_v1.KeyManagementServiceClient, kms_key_factory: KeyFactory
) -> None:
    version = kms_key_factory(P256, fresh=True)
    key_name = version.rsplit("/cryptoKeyVersions/", 1)[0]
    v2 = kms_admin.create_crypto_key_version(
        parent=key_name, crypto_key_version=kms_v1.CryptoKeyVersion()
    )
    assert v2.name == f"{key_name}/cryptoKeyVersions/2"
    assert v2.state == kms_v1.CryptoKeyVersion.CryptoKeyVersionState.ENABLED
    names = [v.name for v in kms_admin.list_crypto_key_versions(parent=key_name)]
    assert names == [version, v2.name]
    keys = [k.name for k in kms_admin.list_crypto_keys(request={"parent": RING, "page_size": 1})]
    assert key_name in keys  # the pager followed next_page_token
    assert kms_admin.get_crypto_key(name=key_name).version_template.algorithm.name == P256
    assert kms_admin.get_public_key(name=v2.name).pem != kms_admin.get_public_key(name=version).pem


def test_missing_resources_are_not_found(
    kms_admin: kms_v1.KeyManagementServiceClient, kms_runner: KmsRunner
) -> None:
    missing = f"{RING}/cryptoKeys/absent/cryptoKeyVersions/1"
    with pytest.raises(gexc.NotFound):
        kms_admin.get_public_key(name=missing, retry=None)
    signer = kms_runner.signer(missing)
    with pytest.raises(KmsKeyNotFound) as info:
        kms_runner.run(signer.sign(b"data"))
    assert info.value.reason == "KMSKeyNotFound"
    assert missing in str(info.value)


def _sign_raw(admin: kms_v1.KeyManagementServiceClient, **request: object) -> object:
    return admin.asymmetric_sign(request=request, retry=None)


def test_digest_rules(
    kms_admin: kms_v1.KeyManagementServiceClient, kms_key_factory: KeyFactory
) -> None:
    p256 = kms_key_factory(P256)
    ed = kms_key_factory("EC_SIGN_ED25519")
    sha256 = hashlib.sha256(b"m").digest()
    with pytest.raises(gexc.InvalidArgument, match="sha384"):
        _sign_raw(kms_admin, name=p256, digest={"sha384": hashlib.sha384(b"m").digest()})
    with pytest.raises(gexc.InvalidArgument, match="length"):
        _sign_raw(kms_admin, name=p256, digest={"sha256": sha256[:31]})
    with pytest.raises(gexc.InvalidArgument, match="digest is required"):
        _sign_raw(kms_admin, name=p256)
    with pytest.raises(gexc.InvalidArgument, match="data is not supported"):
        _sign_raw(kms_admin, name=p256, data=b"m")
    with pytest.raises(gexc.InvalidArgument, match="checksum"):
        _sign_raw(kms_admin, name=p256, digest={"sha256": sha256}, digest_crc32c=crc32c(b"x"))
    with pytest.raises(gexc.InvalidArgument, match="digest is not supported"):
        _sign_raw(kms_admin, name=ed, digest={"sha256": sha256})
    with pytest.raises(gexc.InvalidArgument, match="checksum"):
        _sign_raw(kms_admin, name=ed, data=b"m", data_crc32c=crc32c(b"n"))
    ok = kms_admin.asymmetric_sign(request={"name": ed, "data": b"m", "data_crc32c": crc32c(b"m")})
    assert ok.verified_data_crc32c and not ok.verified_digest_crc32c
    unverified = kms_admin.asymmetric_sign(request={"name": p256, "digest": {"sha256": sha256}})
    assert not unverified.verified_digest_crc32c  # no CRC sent, none claimed


def _set_state(admin: kms_v1.KeyManagementServiceClient, name: str, state: str) -> None:
    admin.update_crypto_key_version(
        crypto_key_version=kms_v1.CryptoKeyVersion(name=name, state=state),
        update_mask=field_mask_pb2.FieldMask(paths=["state"]),
    )


def test_disable_destroy_and_reenable(
    kms_admin: kms_v1.KeyManagementServiceClient,
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_counters: Counters,
) -> None:
    version = kms_key_factory(P256, fresh=True)
    signer = kms_runner.signer(version)
    kms_runner.run(signer.sign(b"before"))

    _set_state(kms_admin, version, "DISABLED")
    with pytest.raises(KmsKeyDisabled) as info:
        kms_runner.run(signer.sign(b"while disabled"))
    assert info.value.reason == "KMSKeyDisabled" and info.value.code == "FAILED_PRECONDITION"
    assert version in str(info.value) and "DISABLED" in str(info.value)
    assert info.value.attempts == 1  # not retried

    _set_state(kms_admin, version, "ENABLED")
    kms_runner.run(signer.sign(b"after re-enable"))

    destroyed = kms_admin.destroy_crypto_key_version(name=version)
    assert destroyed.state.name == "DESTROY_SCHEDULED" and destroyed.destroy_time
    with pytest.raises(KmsKeyDisabled, match="DESTROY_SCHEDULED"):
        kms_runner.run(signer.sign(b"while destroyed"))
    with pytest.raises(gexc.FailedPrecondition):
        _set_state(kms_admin, version, "ENABLED")
    with pytest.raises(gexc.FailedPrecondition):
        kms_admin.get_public_key(name=version, retry=None)
    assert kms_counters.count("AsymmetricSign", version, "OK") == 2
    assert kms_counters.count("AsymmetricSign", version, "FAILED_PRECONDITION") == 2


def test_update_mask_must_be_state(
    kms_admin: kms_v1.KeyManagementServiceClient, kms_key_factory: KeyFactory
) -> None:
    version = kms_key_factory(P256)
    with pytest.raises(gexc.InvalidArgument, match="update_mask"):
        kms_admin.update_crypto_key_version(
            crypto_key_version=kms_v1.CryptoKeyVersion(name=version, state="DISABLED"),
            update_mask=field_mask_pb2.FieldMask(paths=["algorithm"]),
        )


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, KmsPermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, KmsPermissionDenied),
        (grpc.StatusCode.INTERNAL, KmsError),
    ],
)
def test_non_retryable_codes_fail_after_one_attempt(
    code: grpc.StatusCode,
    error: type[KmsError],
    kms_key_factory: KeyFactory,
    kms_runner: KmsRunner,
    kms_faults: Faults,
    kms_counters: Counters,
) -> None:
    version = kms_key_factory(P256)
    signer = kms_runner.warm_signer(version, retry=RetryPolicy(deadline=5))
    kms_faults.fail_next(1, code)
    with pytest.raises(error) as info:
        kms_runner.run(signer.sign(b"x"))
    assert type(info.value) is error
    assert info.value.code == code.name and version in str(info.value)
    assert kms_counters.count("AsymmetricSign", version) == 1

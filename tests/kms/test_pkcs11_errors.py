"""PKCS#11 failures as the typed KMS errors the controller acts on (pure: no token)."""

from __future__ import annotations

import pytest
from pkcs11 import exceptions as p11e

from signet.kms.errors import (
    KmsError,
    KmsInvalidArgument,
    KmsKeyDisabled,
    KmsKeyNotFound,
    KmsLoginFailed,
    KmsTokenNotFound,
    KmsUnavailable,
    KmsWrongAlgorithm,
)
from signet.kms.pkcs11pool import map_error

KEY = "pkcs11:token=ca;object=key;type=private"


@pytest.mark.parametrize(
    ("error", "typed", "reason"),
    [
        (p11e.PinIncorrect(), KmsLoginFailed, "HSMLoginFailed"),
        (p11e.PinLocked(), KmsLoginFailed, "HSMLoginFailed"),
        (p11e.NoSuchToken(), KmsTokenNotFound, "HSMTokenNotFound"),
        (p11e.MultipleTokensReturned(), KmsTokenNotFound, "HSMTokenNotFound"),
        (p11e.NoSuchKey(), KmsKeyNotFound, "KMSKeyNotFound"),
        (p11e.MechanismInvalid(), KmsWrongAlgorithm, "KMSWrongAlgorithm"),
        (p11e.KeyTypeInconsistent(), KmsKeyDisabled, "KMSKeyDisabled"),
        (p11e.SessionHandleInvalid(), KmsUnavailable, "KMSUnavailable"),
        (p11e.DeviceRemoved(), KmsUnavailable, "KMSUnavailable"),
        (p11e.TokenNotPresent(), KmsUnavailable, "KMSUnavailable"),
        (p11e.SessionCount(), KmsUnavailable, "KMSUnavailable"),
        (p11e.DataLenRange(), KmsInvalidArgument, "KMSInvalidArgument"),
        (p11e.FunctionRejected(), KmsError, "KMSError"),
    ],
)
def test_each_pkcs11_error_has_its_typed_error(
    error: p11e.PKCS11Error, typed: type[KmsError], reason: str
) -> None:
    mapped = map_error(KEY, error, "signing")
    assert type(mapped) is typed
    assert mapped.reason == reason
    assert not mapped.reason.permanent  # HSM state changes outside Kubernetes: retried
    assert KEY in str(mapped) and "signing" in str(mapped)
    assert mapped.code == type(error).__name__ or isinstance(mapped, KmsWrongAlgorithm)

"""KMS failures as exceptions with a reason: what a condition, an Event and a metric say.

Each gRPC status a KMS call can end with maps to one class, so callers catch the failures
they can act on (a disabled key, a quota) and report the rest by their reason.
"""

from __future__ import annotations

from typing import ClassVar

import grpc
from google.api_core.exceptions import GoogleAPICallError

from signet.reasons import Reason


class KmsError(Exception):
    """A KMS operation failed. ``reason`` is a short CamelCase token for conditions and
    metrics; the message names the key version and the cause (never key material)."""

    reason: ClassVar[Reason] = Reason.KMS_ERROR

    def __init__(
        self, key_version: str, cause: str, *, code: str | None = None, attempts: int = 1
    ) -> None:
        self.key_version = key_version
        self.cause = cause
        self.code = code
        """gRPC status code name of the last failed attempt, if the failure was an RPC."""
        self.attempts = attempts
        super().__init__(f"{self.reason}: {cause} (key version {key_version})")


class KmsPermissionDenied(KmsError):
    """PERMISSION_DENIED or UNAUTHENTICATED: fix IAM, retrying will not help."""

    reason = Reason.KMS_PERMISSION_DENIED


class KmsKeyNotFound(KmsError):
    """The key version does not exist (NOT_FOUND)."""

    reason = Reason.KMS_KEY_NOT_FOUND


class KmsKeyDisabled(KmsError):
    """FAILED_PRECONDITION: the version is disabled, scheduled for destruction or gone."""

    reason = Reason.KMS_KEY_DISABLED


class KmsInvalidArgument(KmsError):
    """INVALID_ARGUMENT: a malformed name or a request KMS rejected."""

    reason = Reason.KMS_INVALID_ARGUMENT


class KmsUnavailable(KmsError):
    """KMS could not be reached in time (UNAVAILABLE / DEADLINE_EXCEEDED after retries)."""

    reason = Reason.KMS_UNAVAILABLE


class KmsQuotaExceeded(KmsUnavailable):
    """RESOURCE_EXHAUSTED persisted until the deadline."""

    reason = Reason.KMS_QUOTA_EXCEEDED


class KmsIntegrityError(KmsError):
    """A checksum, resource name or local signature check failed."""

    reason = Reason.KMS_INTEGRITY_ERROR


class KmsWrongAlgorithm(KmsError):
    """The key version's algorithm is unsupported or not the one configured."""

    reason = Reason.KMS_WRONG_ALGORITHM


class KmsTokenNotFound(KmsKeyNotFound):
    """PKCS#11: no token (or more than one) matches the URI's token attributes."""

    reason = Reason.HSM_TOKEN_NOT_FOUND


class KmsLoginFailed(KmsPermissionDenied):
    """PKCS#11: the token refused the PIN (incorrect, locked, expired)."""

    reason = Reason.HSM_LOGIN_FAILED


class KmsPinNotFound(KmsError):
    """PKCS#11: the PIN's Secret (or key in it) or file cannot be read."""

    reason = Reason.HSM_PIN_NOT_FOUND


_ERRORS_BY_CODE: dict[grpc.StatusCode, type[KmsError]] = {
    grpc.StatusCode.PERMISSION_DENIED: KmsPermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: KmsPermissionDenied,
    grpc.StatusCode.NOT_FOUND: KmsKeyNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: KmsKeyDisabled,
    grpc.StatusCode.INVALID_ARGUMENT: KmsInvalidArgument,
    grpc.StatusCode.UNAVAILABLE: KmsUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: KmsUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: KmsQuotaExceeded,
}


def _status_code(exc: GoogleAPICallError) -> grpc.StatusCode:
    code = exc.grpc_status_code
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _error_from_rpc(
    key_version: str, exc: GoogleAPICallError, attempts: int, prefix: str = ""
) -> KmsError:
    code = _status_code(exc)
    cls = _ERRORS_BY_CODE.get(code, KmsError)
    cause = f"{prefix}{code.name}: {exc.message}"
    return cls(key_version, cause, code=code.name, attempts=attempts)

"""Every reason Signet gives, in one place: why it signs, why it will not, why it failed.

A reason is what an SRE reads in a condition, an Event and a metric label, so the three
must agree, and whether Signet will try again on its own must follow from the reason alone
rather than from lists kept beside each caller. Members are strings (``StrEnum``): they go
into the API and JSON as they are.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """What a reason says about the next attempt."""

    TRIGGER = "trigger"
    """A new signature is due; the Issuing condition and Issued Event say which."""
    SETTLED = "settled"
    """Nothing to sign (up to date, or only metadata to repair)."""
    REFUSED = "refused"
    """The request or its surroundings are wrong; retrying the same input fails the same
    way, so Signet waits for a change (of the spec, the issuer, the namespace, the Secret)."""
    TRANSIENT = "transient"
    """Something outside was unavailable; retried on the backoff schedule."""


class Reason(enum.StrEnum):
    """Every condition, Event and metric reason Signet uses."""

    # -- triggers: why a signature is spent (cert-manager's issuing reasons) ----------------
    DOES_NOT_EXIST = "DoesNotExist"
    MISSING_DATA = "MissingData"
    INVALID_KEY = "InvalidKey"
    INVALID_TYPE = "InvalidType"
    INVALID_CERTIFICATE = "InvalidCertificate"
    KEY_MISMATCH = "KeyMismatch"
    INCORRECT_ISSUER = "IncorrectIssuer"
    SPEC_CHANGED = "SpecChanged"
    MANUALLY_TRIGGERED = "ManuallyTriggered"
    EXPIRED = "Expired"
    RENEWING = "Renewing"
    # -- settled -------------------------------------------------------------------------
    UP_TO_DATE = "UpToDate"
    SECRET_METADATA_DRIFT = "SecretMetadataDrift"
    SECRET_OUTPUTS_MISMATCH = "SecretOutputsMismatch"
    """keystores, additionalOutputFormats or privateKey.encoding changed: the Secret's data
    is rewritten from the key and chain it holds, without a signature."""
    READY = "Ready"
    ISSUED = "Issued"
    SECRET_REPAIRED = "SecretRepaired"
    KEY_READY = "KeyReady"
    # -- CA rotation: the transitions of an issuer's rollover (Events and audit records) ---
    ROTATION_STARTED = "RotationStarted"
    ROTATION_REISSUING = "RotationReissuing"
    ROTATION_RETIRING = "RotationRetiring"
    ROTATION_COMPLETED = "RotationCompleted"
    ROTATION_ROLLED_BACK = "RotationRolledBack"
    # -- refused: the Secret is not Signet's to write -------------------------------------
    SECRET_NOT_MANAGED = "SecretNotManaged"
    SECRET_IN_USE = "SecretInUse"
    SECRET_TYPE_CHANGED = "SecretTypeChanged"
    # -- refused: the spec ----------------------------------------------------------------
    INVALID_SPEC = "InvalidSpec"
    INVALID_DURATION = "InvalidDuration"
    INVALID_POLICY = "InvalidPolicy"
    INVALID_KEY_VERSION = "InvalidKeyVersion"
    INVALID_TRUST_DOMAIN = "InvalidTrustDomain"
    INVALID_REQUEST = "InvalidRequest"
    INVALID_ISSUER_REF = "InvalidIssuerRef"
    UNSUPPORTED_KEY_ALGORITHM = "UnsupportedKeyAlgorithm"
    UNSUPPORTED_KEY_SIZE = "UnsupportedKeySize"
    # -- refused: policy ------------------------------------------------------------------
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    DURATION_TOO_LONG = "DurationTooLong"
    KEY_ALGORITHM_NOT_ALLOWED = "KeyAlgorithmNotAllowed"
    X509_NOT_ENABLED = "X509NotEnabled"
    SSH_NOT_ENABLED = "SSHNotEnabled"
    SSH_TYPE_NOT_ALLOWED = "SSHTypeNotAllowed"
    SSH_PRINCIPAL_NOT_ALLOWED = "SSHPrincipalNotAllowed"
    SSH_CRITICAL_OPTION_NOT_ALLOWED = "SSHCriticalOptionNotAllowed"
    SSH_EXTENSION_NOT_ALLOWED = "SSHExtensionNotAllowed"
    SPIFFE_ID_NOT_ALLOWED = "SPIFFEIDNotAllowed"
    WILDCARD_NOT_ALLOWED = "WildcardNotAllowed"
    DNS_NAME_NOT_ALLOWED = "DNSNameNotAllowed"
    URI_NOT_ALLOWED = "URINotAllowed"
    EMAIL_ADDRESS_NOT_ALLOWED = "EmailAddressNotAllowed"
    COMMON_NAME_NOT_ALLOWED = "CommonNameNotAllowed"
    IP_ADDRESS_NOT_ALLOWED = "IPAddressNotAllowed"
    # -- refused: the issuer's key cannot do what is asked ----------------------------------
    SSH_UNSUPPORTED_KEY = "SSHUnsupportedKey"
    # -- refused: PodCertificateRequests (the first two are Kubernetes' own denial reasons) --
    UNSUPPORTED_KEY_TYPE = "UnsupportedKeyType"
    INVALID_UNVERIFIED_USER_ANNOTATIONS = "InvalidUnverifiedUserAnnotations"
    UNKNOWN_SIGNER = "UnknownSigner"
    POD_CERTIFICATES_NOT_ENABLED = "PodCertificatesNotEnabled"
    # -- refused: CertificateSigningRequests ----------------------------------------------
    CERTIFICATE_SIGNING_REQUESTS_NOT_ENABLED = "CertificateSigningRequestsNotEnabled"
    REQUESTER_NOT_ALLOWED = "RequesterNotAllowed"
    USAGE_NOT_ALLOWED = "UsageNotAllowed"
    # -- refused: cert-manager CertificateRequests ------------------------------------------
    REQUEST_DENIED = "RequestDenied"
    """An approver denied it; answered Failed with cert-manager's reason Denied."""
    # -- transient (KMS and IAM change outside Kubernetes: only a retry can notice) --------
    KMS_PERMISSION_DENIED = "KMSPermissionDenied"
    KMS_INVALID_ARGUMENT = "KMSInvalidArgument"
    KMS_WRONG_ALGORITHM = "KMSWrongAlgorithm"
    ISSUER_NOT_FOUND = "IssuerNotFound"
    ISSUER_NOT_READY = "IssuerNotReady"
    CA_SECRET_NOT_FOUND = "CASecretNotFound"
    CA_SECRET_INVALID = "CASecretInvalid"
    KMS_ERROR = "KMSError"
    KMS_KEY_NOT_FOUND = "KMSKeyNotFound"
    KMS_KEY_DISABLED = "KMSKeyDisabled"
    KMS_UNAVAILABLE = "KMSUnavailable"
    KMS_QUOTA_EXCEEDED = "KMSQuotaExceeded"
    KMS_INTEGRITY_ERROR = "KMSIntegrityError"
    HSM_TOKEN_NOT_FOUND = "HSMTokenNotFound"
    HSM_LOGIN_FAILED = "HSMLoginFailed"
    HSM_PIN_NOT_FOUND = "HSMPINNotFound"
    KEYSTORE_PASSWORD_NOT_FOUND = "KeystorePasswordNotFound"
    SECRET_WRITE_FAILED = "SecretWriteFailed"
    API_ERROR = "APIError"
    INTERNAL_ERROR = "InternalError"

    @property
    def kind(self) -> Kind:
        return _KINDS[self]

    @property
    def permanent(self) -> bool:
        """Retrying the same inputs cannot help: wait for them to change."""
        return _KINDS[self] is Kind.REFUSED


_TRIGGERS = {
    Reason.DOES_NOT_EXIST,
    Reason.MISSING_DATA,
    Reason.INVALID_KEY,
    Reason.INVALID_TYPE,
    Reason.INVALID_CERTIFICATE,
    Reason.KEY_MISMATCH,
    Reason.INCORRECT_ISSUER,
    Reason.SPEC_CHANGED,
    Reason.MANUALLY_TRIGGERED,
    Reason.EXPIRED,
    Reason.RENEWING,
}
_SETTLED = {
    Reason.UP_TO_DATE,
    Reason.SECRET_METADATA_DRIFT,
    Reason.SECRET_OUTPUTS_MISMATCH,
    Reason.READY,
    Reason.ISSUED,
    Reason.SECRET_REPAIRED,
    Reason.KEY_READY,
    Reason.ROTATION_STARTED,
    Reason.ROTATION_REISSUING,
    Reason.ROTATION_RETIRING,
    Reason.ROTATION_COMPLETED,
    Reason.ROTATION_ROLLED_BACK,
}
_TRANSIENT = {
    Reason.KMS_PERMISSION_DENIED,
    Reason.KMS_INVALID_ARGUMENT,
    Reason.KMS_WRONG_ALGORITHM,
    Reason.ISSUER_NOT_FOUND,
    Reason.ISSUER_NOT_READY,
    Reason.CA_SECRET_NOT_FOUND,
    Reason.CA_SECRET_INVALID,
    Reason.KMS_ERROR,
    Reason.KMS_KEY_NOT_FOUND,
    Reason.KMS_KEY_DISABLED,
    Reason.KMS_UNAVAILABLE,
    Reason.KMS_QUOTA_EXCEEDED,
    Reason.KMS_INTEGRITY_ERROR,
    Reason.HSM_TOKEN_NOT_FOUND,
    Reason.HSM_LOGIN_FAILED,
    Reason.HSM_PIN_NOT_FOUND,
    Reason.KEYSTORE_PASSWORD_NOT_FOUND,
    Reason.SECRET_WRITE_FAILED,
    Reason.API_ERROR,
    Reason.INTERNAL_ERROR,
}
_KINDS: dict[Reason, Kind] = {
    reason: Kind.TRIGGER
    if reason in _TRIGGERS
    else Kind.SETTLED
    if reason in _SETTLED
    else Kind.TRANSIENT
    if reason in _TRANSIENT
    else Kind.REFUSED
    for reason in Reason
}

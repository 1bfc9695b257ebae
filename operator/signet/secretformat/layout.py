"""How an issued identity is laid out in a Secret.

X.509 Secrets match cert-manager's ``kubernetes.io/tls`` layout exactly (``tls.crt`` leaf
plus chain, ``tls.key`` in ``privateKey.encoding``, ``ca.crt`` root, and cert-manager's
optional keystores and extra formats), so ingress controllers, service meshes and anything
else that mounts cert-manager Secrets work unchanged. SSH Secrets use
``kubernetes.io/ssh-auth`` with ``ssh-privatekey`` plus the files sshd and ssh want beside it.

Annotations name what was issued, like cert-manager's ``cert-manager.io/*`` ones, so tools
can read a Secret without decoding it. None of them carry key material.
"""

from __future__ import annotations

import hashlib

PREFIX = "signet.dev/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "signet"
CERTIFICATE_LABEL = PREFIX + "certificate-name"
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
"""Server-side label selector of the Secret watch: Signet never sees other Secrets."""

CERTIFICATE_NAME = PREFIX + "certificate-name"
ISSUER_NAME = PREFIX + "issuer-name"
ISSUER_KIND = PREFIX + "issuer-kind"
ISSUER_GROUP = PREFIX + "issuer-group"
KEY_VERSION = PREFIX + "key-version"
SERIAL = PREFIX + "serial-number"
NOT_BEFORE = PREFIX + "not-before"
NOT_AFTER = PREFIX + "not-after"
COMMON_NAME = PREFIX + "common-name"
ALT_NAMES = PREFIX + "alt-names"
IP_SANS = PREFIX + "ip-sans"
URI_SANS = PREFIX + "uri-sans"
EMAIL_SANS = PREFIX + "email-sans"
SPIFFE_ID = PREFIX + "spiffe-id"
SSH_PRINCIPALS = PREFIX + "ssh-principals"
SSH_KEY_ID = PREFIX + "ssh-key-id"
SPEC_HASH = PREFIX + "spec-hash"
REVISION = PREFIX + "revision"
ISSUED_AT = PREFIX + "issued-at"
OUTPUTS = PREFIX + "outputs"
"""A fingerprint of the spec's output formats (keystores, additionalOutputFormats, an explicit
privateKey.encoding) the data was written for; absent means none were asked for."""

TLS_TYPE = "kubernetes.io/tls"
TLS_CERT, TLS_KEY, CA_CERT = "tls.crt", "tls.key", "ca.crt"
KEYSTORE_P12, TRUSTSTORE_P12 = "keystore.p12", "truststore.p12"
COMBINED_PEM, KEY_DER = "tls-combined.pem", "key.der"
OUTPUT_KEYS = (KEYSTORE_P12, TRUSTSTORE_P12, COMBINED_PEM, KEY_DER)
"""cert-manager's names for the optional X.509 outputs (keystores, additionalOutputFormats)."""
SSH_TYPE = "kubernetes.io/ssh-auth"
SSH_PRIVATE_KEY = "ssh-privatekey"
SSH_PUBLIC_KEY = "ssh-publickey"
SSH_CERTIFICATE = "ssh-certificate"
SSH_CA = "ssh-ca.pub"

REQUIRED_KEYS = {
    TLS_TYPE: (TLS_CERT, TLS_KEY, CA_CERT),
    SSH_TYPE: (SSH_PRIVATE_KEY, SSH_CERTIFICATE),
}


def certificate_label_value(name: str) -> str:
    """Label values stop at 63 characters; longer Certificate names are hashed."""
    if len(name) <= 63:
        return name
    return name[:46] + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]

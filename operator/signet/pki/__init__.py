"""Certificate construction: X.509 leaves and CAs, OpenSSH certificates, leaf keys.

Pure functions over ``cryptography`` objects; no Kubernetes, no kopf, no gRPC. The CA key
is reached only through :mod:`signet.pki.kmskey`, whose adapters make a Cloud KMS key
version look like a ``cryptography`` private key that can sign once and do nothing else.

Modules, one concern each:

* :mod:`~signet.pki.kmskey` - KMS private-key adapters and the async bridge
  (:func:`~signet.pki.kmskey.sign_in_thread`).
* :mod:`~signet.pki.keys` - leaf key generation, loading, PEM/OpenSSH encoding,
  fingerprints, key/certificate matching.
* :mod:`~signet.pki.names`, :mod:`~signet.pki.spiffe` - SAN and SPIFFE ID validation.
* :mod:`~signet.pki.x509` - leaf, self-signed CA and intermediate CA certificates.
* :mod:`~signet.pki.chain` - verifying a user-supplied CA chain for a KMS key.
* :mod:`~signet.pki.ssh`, :mod:`~signet.pki.ssh_rsa` - OpenSSH user/host certificates and
  ``authorized_keys``/``known_hosts`` lines.
"""

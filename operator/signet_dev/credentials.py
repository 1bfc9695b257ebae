"""Throwaway credentials for a local control plane.

These keys exist for the lifetime of one test session or `python -m signet_dev cluster up`
run and live in its temporary folder. They have nothing to do with the CA keys Signet
protects, which never leave KMS; this is only the scaffolding a real kube-apiserver needs
to serve TLS, authenticate an admin by client certificate and sign ServiceAccount tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signet.pki.x509 import ca_key_usage

_LIFETIME = datetime.timedelta(days=2)


@dataclass(frozen=True)
class ControlPlaneCredentials:
    """File paths of everything kube-apiserver and its clients are started with."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_signing_key: Path
    sa_public_key: Path

    def admin_context(self) -> ssl.SSLContext:
        """TLS as the admin: trusts the cluster CA, presents the admin certificate (what
        start-up probes of the apiserver and the node need)."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca:
        builder = builder.add_extension(ca_key_usage(digital_signature=True), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA and its key, held in memory."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    return _issue(name, key.public_key(), name, key, is_ca=True), key


def write_leaf(
    folder: Path,
    name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    organization: str | None = None,
    server: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A new key and a certificate for it signed by ``ca``, for serving (``server``) or
    client authentication, written as ``folder/name.crt`` and ``folder/name.key``; returns
    (certificate, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = _issue(
        _name(common_name, organization),
        key.public_key(),
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=sans or None,
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def generate(folder: Path) -> ControlPlaneCredentials:
    """Create a CA, a serving certificate for 127.0.0.1, an admin client certificate in
    ``system:masters`` and a ServiceAccount token signing key, all inside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca, ca_key = new_ca("signet-devcluster-ca")
    serving_cert, serving_key = write_leaf(
        folder,
        "apiserver",
        ca,
        ca_key,
        common_name="kube-apiserver",
        server=True,
        dns_names=("localhost", "kubernetes.default.svc"),
        ip_addresses=("127.0.0.1",),
    )
    admin_cert, admin_key = write_leaf(
        folder, "admin", ca, ca_key, common_name="signet-admin", organization="system:masters"
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())

    creds = ControlPlaneCredentials(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=serving_cert,
        serving_key=serving_key,
        admin_cert=admin_cert,
        admin_key=admin_key,
        sa_signing_key=folder / "sa.key",
        sa_public_key=folder / "sa.pub",
    )
    creds.ca_cert.write_bytes(ca.public_bytes(pem))
    _write_key(creds.ca_key, ca_key)
    _write_key(creds.sa_signing_key, sa_key)
    creds.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return creds


def issue_leaf(
    creds: ControlPlaneCredentials,
    folder: Path,
    name: str,
    *,
    common_name: str,
    organization: str | None = None,
    server: bool = False,
    ip_addresses: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A key and certificate signed by the control plane's CA, for components that join it
    later (a kubelet's client and serving identities); returns (certificate, key) paths."""
    ca_key = serialization.load_pem_private_key(creds.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    return write_leaf(
        folder,
        name,
        ca,
        ca_key,
        common_name=common_name,
        organization=organization,
        server=server,
        ip_addresses=ip_addresses,
    )

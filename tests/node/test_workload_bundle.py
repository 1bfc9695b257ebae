"""The node's workload reads a kubelet credential bundle (``--bundle``) the way it reads a
Secret volume: one version at a time, again for every handshake.

No kubelet here: the binary runs on the host with files laid out as the kubelet's atomic
writer lays out a projected volume (``bundle.pem -> ..data/bundle.pem``, ``..data`` a link
swapped to a fresh folder), so what the pod tests cannot show in a test's patience (the
kubelet refreshes pod certificates after at least ten minutes) is shown here in seconds:
a swapped bundle is in use from the next handshake, and a broken one is reported and
recovered from without a restart.
"""

from __future__ import annotations

import datetime
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signet_dev.controlplane import free_port
from tests.kube import eventually, tools_bin
from tests.node.pods import status

TRUST_DOMAIN = "bundle.test"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/server"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/client"
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str, parent: Authority | None = None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer = parent.cert.subject if parent else _name(common_name)
    signing_key = parent.key if parent else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(signing_key, hashes.SHA256())
    )
    return Authority(key, cert)


def _svid(ca: Authority, spiffe_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return key, cert


def bundle_pem(key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> bytes:
    """The kubelet's credential bundle: PKCS#8 key, then the chain, leaf first."""
    key_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem + b"".join(cert.public_bytes(PEM) for cert in chain)


class AtomicVolume:
    """A folder written like the kubelet's atomic writer: every file is a link through
    ``..data``, which is replaced in one rename, so a reader never sees half an update."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder

    def write(self, files: dict[str, bytes]) -> None:
        version = self.folder / f"..{uuid.uuid4().hex}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        link = self.folder / "..data_tmp"
        link.symlink_to(version.name)
        previous = (self.folder / "..data").resolve() if (self.folder / "..data").exists() else None
        link.rename(self.folder / "..data")
        for name in files:
            if not (self.folder / name).is_symlink():
                (self.folder / name).symlink_to(f"..data/{name}")
        if previous is not None:
            for old in previous.iterdir():
                old.unlink()
            previous.rmdir()


@dataclass
class Workload:
    process: subprocess.Popen[bytes]
    status_port: int
    log: Path

    def report(self) -> dict[str, Any]:
        assert self.process.poll() is None, self.log.read_text()
        return status(self.status_port)

    def reached(self, what: str, check: Any) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            report = self.report()
            return report if check(report) else None

        result: dict[str, Any] = eventually(
            ready, timeout=30, interval=0.1, what=what, errors=(OSError,)
        )
        return result


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Runs ``signet-workload`` with the given arguments and a status endpoint; stopped
    (SIGTERM, then waited for) after the test."""
    binary = tools_bin() / "signet-workload"
    if not binary.exists():
        pytest.skip(f"{binary} missing: run `make tools`")
    started: list[Workload] = []

    def run(*args: str) -> Workload:
        port = free_port()
        log = tmp_path / f"workload-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(binary), *args, f"--status=127.0.0.1:{port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        workload = Workload(process, port, log)
        started.append(workload)
        eventually(workload.report, timeout=10, what="status endpoint", errors=(OSError,))
        return workload

    yield run
    for workload in started:
        workload.process.terminate()
        workload.process.wait(timeout=10)


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def test_bundles_authenticate_and_a_swapped_bundle_is_used_without_restart(
    tmp_path: Path, start: Any
) -> None:
    root = _ca("bundle root")
    intermediate = _ca("bundle intermediate", root)
    trust = tmp_path / "ca.crt"
    trust.write_bytes(root.cert.public_bytes(PEM))
    volumes = {role: AtomicVolume(tmp_path / role) for role in ("server", "client")}
    identities = {
        "server": _svid(intermediate, SERVER_ID),
        "client": _svid(intermediate, CLIENT_ID),
    }
    for role, (key, cert) in identities.items():
        volumes[role].write({"bundle.pem": bundle_pem(key, [cert, intermediate.cert])})

    port = free_port()
    server = start(
        "server", f"--bundle={tmp_path / 'server' / 'bundle.pem'}", f"--trust={trust}",
        f"--listen=127.0.0.1:{port}", f"--allow={CLIENT_ID}",
    )  # fmt: skip
    client = start(
        "client", f"--bundle={tmp_path / 'client' / 'bundle.pem'}", f"--trust={trust}",
        f"--connect=127.0.0.1:{port}", f"--expect={SERVER_ID}", "--interval=50ms",
    )  # fmt: skip
    report = client.reached("three handshakes", lambda r: r["ok"] >= 3)
    assert report["peers"] == {SERVER_ID: report["ok"]}
    assert report["ownSerials"] == [_serial(identities["client"][1])]
    assert report["peerSerials"] == [_serial(identities["server"][1])]
    assert server.report()["peers"].keys() == {CLIENT_ID}

    # A renewal: a new key and certificate, swapped in as the kubelet does.
    key, renewed = _svid(intermediate, CLIENT_ID)
    volumes["client"].write({"bundle.pem": bundle_pem(key, [renewed, intermediate.cert])})
    client.reached(
        "the renewed certificate in use", lambda r: r["ownSerials"][-1] == _serial(renewed)
    )
    server.reached(
        "the server saw the renewed certificate",
        lambda r: r["peerSerials"][-1] == _serial(renewed),
    )
    assert client.report()["failed"] == 0
    assert server.report()["failed"] == 0


def test_a_broken_bundle_fails_handshakes_until_a_good_one_arrives(
    tmp_path: Path, start: Any
) -> None:
    root = _ca("bundle root")
    trust = tmp_path / "ca.crt"
    trust.write_bytes(root.cert.public_bytes(PEM))
    server_key, server_cert = _svid(root, SERVER_ID)
    (tmp_path / "server.pem").write_bytes(bundle_pem(server_key, [server_cert]))
    port = free_port()
    start(
        "server", f"--bundle={tmp_path / 'server.pem'}", f"--trust={trust}",
        f"--listen=127.0.0.1:{port}", f"--allow={CLIENT_ID}",
    )  # fmt: skip
    volume = AtomicVolume(tmp_path / "client")
    key, cert = _svid(root, CLIENT_ID)
    stranger = ec.generate_private_key(ec.SECP256R1())
    volume.write({"bundle.pem": bundle_pem(stranger, [cert])})  # not the leaf's key
    client = start(
        "client", f"--bundle={tmp_path / 'client' / 'bundle.pem'}", f"--trust={trust}",
        f"--connect=127.0.0.1:{port}", f"--expect={SERVER_ID}", "--interval=50ms",
    )  # fmt: skip
    failed = client.reached("a failed handshake", lambda r: r["failed"] >= 1)
    assert failed["ok"] == 0
    assert "private key does not match public key" in failed["lastError"]

    volume.write({"bundle.pem": bundle_pem(key, [cert])})
    recovered = client.reached("a handshake with the repaired bundle", lambda r: r["ok"] >= 1)
    assert recovered["ownSerials"] == [_serial(cert)]

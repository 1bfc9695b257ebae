"""Batch helpers for the reliability suite: create many Certificates, watch them converge,
snapshot Secrets, check keys against certificates, read operator memory and metrics."""

from __future__ import annotations

import base64
import datetime
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signet.api.certificate import RENEW_ANNOTATION
from signet.secretformat import layout
from tests.kube import Kube, eventually
from tests.operator.harness import (
    GROUP,
    VERSION,
    OperatorProcess,
    certificate_manifest,
    condition,
    get_certificate,
    issuer_manifest,
    wait_issuer_ready,
)

Obj = dict[str, Any]
KMS_DEADLINE_S = 3.0
"""The harness runs the operator with ``--kms-deadline=3``."""
RETRY_BASE_S = 2.0
"""The operator's first retry delay after a failed attempt; it doubles with each one."""
RETRY_CAP_S = 300.0
WORKERS = 32
"""The operator's default --max-concurrent-issuances: passes (and KMS attempts) at once."""


KeyFactory = Callable[..., str]


def fresh_issuer(kube: Kube, namespace: str, key_factory: KeyFactory, timeout: float = 30) -> str:
    """A Ready Issuer "ca" on a KMS key of its own (faults on the key must not leak into
    other tests); returns the key version."""
    key_version: str = key_factory("EC_SIGN_P256_SHA256", fresh=True)
    kube.apply(issuer_manifest("ca", key_version, namespace=namespace))
    wait_issuer_ready(kube, namespace, "ca", timeout=timeout)
    return key_version


def issued_count(kube: Kube, namespace: str) -> int:
    """Certificates in the namespace that carry a serial (issued at least once)."""
    return sum(
        1
        for c in list_certificates(kube, namespace).values()
        if (c.get("status") or {}).get("serialNumber")
    )


def create_certificates(
    kube: Kube, namespace: str, issuer: str, names: Iterable[str], **spec: Any
) -> None:
    """Create Certificates through the API (not kubectl: a batch of 200 takes seconds)."""

    def create(name: str) -> None:
        kube.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "certificates",
            certificate_manifest(name, namespace, issuer, **spec),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, names))


def list_certificates(kube: Kube, namespace: str) -> dict[str, Obj]:
    result = kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "certificates")
    return {item["metadata"]["name"]: item for item in result["items"]}


def is_current(obj: Obj, status: str, reason: str | None = None) -> bool:
    ready = condition(obj, "Ready")
    return (
        ready.get("status") == status
        and (reason is None or ready.get("reason") == reason)
        and ready.get("observedGeneration") == obj["metadata"].get("generation")
    )


def poll(check: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str) -> Any:
    """``eventually`` that survives connection errors (the apiserver may be restarting or
    frozen while we poll)."""
    return eventually(check, timeout=timeout, interval=interval, what=what, errors=(Exception,))


def wait_all(
    kube: Kube,
    namespace: str,
    names: Iterable[str],
    *,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
    where: Callable[[Obj], bool] = lambda _: True,
) -> dict[str, Obj]:
    """Wait until every named Certificate has Ready=``status`` (``reason``) for its current
    generation; on timeout, name the stragglers and their conditions."""
    wanted = set(names)
    stragglers: dict[str, Any] = {}

    def check() -> dict[str, Obj] | None:
        certs = list_certificates(kube, namespace)
        stragglers.clear()
        for name in wanted:
            obj = certs.get(name)
            if obj is None or not (is_current(obj, status, reason) and where(obj)):
                stragglers[name] = condition(obj, "Ready") if obj else "missing"
        return None if stragglers else {n: certs[n] for n in wanted}

    try:
        result: dict[str, Obj] = poll(
            check, timeout=timeout, what=f"{len(wanted)} Certificates Ready={status}"
        )
    except AssertionError as error:
        sample = dict(list(stragglers.items())[:3])
        raise AssertionError(f"{error}; {len(stragglers)} not there, e.g. {sample}") from None
    return result


def wait_reissued(
    kube: Kube, namespace: str, name: str, old_serial: str, *, timeout: float, what: str
) -> Obj:
    """Wait until Certificate ``name`` is Ready for its current generation with a serial
    other than ``old_serial`` in its status, and its Secret holds that same serial; returns
    the Certificate. Signet writes the Secret first and the status after it, so a reader in
    between sees the new Secret under the old status: waiting for the Secret alone is not
    waiting for the re-issue."""
    seen: dict[str, Any] = {}

    def check() -> Obj | None:
        obj = get_certificate(kube, namespace, name)
        serial = (obj.get("status") or {}).get("serialNumber")
        secret = kube.core.read_namespaced_secret(obj["spec"]["secretName"], namespace).metadata
        seen.update(
            status_serial=serial,
            secret_serial=((secret and secret.annotations) or {}).get(layout.SERIAL),
            ready=condition(obj, "Ready"),
        )
        if not is_current(obj, "True") or serial in (None, old_serial):
            return None
        return obj if seen["secret_serial"] == serial else None

    try:
        result: Obj = poll(check, timeout=timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen {seen}") from None
    return result


@dataclass(frozen=True)
class SecretState:
    resource_version: str
    serial: str
    data: dict[str, bytes]


def secret_snapshot(kube: Kube, namespace: str) -> dict[str, SecretState]:
    """Every Signet-managed Secret of the namespace: resourceVersion, serial, data."""
    items = kube.core.list_namespaced_secret(namespace, label_selector=layout.SELECTOR).items
    return {
        s.metadata.name: SecretState(
            s.metadata.resource_version,
            (s.metadata.annotations or {}).get(layout.SERIAL, ""),
            {k: base64.b64decode(v) for k, v in (s.data or {}).items()},
        )
        for s in items
    }


def request_renewal(kube: Kube, namespace: str, name: str) -> None:
    """What ``signet renew`` does: a timestamp later than the Secret's issued-at."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "certificates",
        name,
        {"metadata": {"annotations": {RENEW_ANNOTATION: stamp}}},
    )


def _raw_public(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def key_matches_certificate(data: dict[str, bytes]) -> bool:
    """The Secret's private key is the one its certificate certifies (X.509 or OpenSSH)."""
    if layout.TLS_KEY in data:
        key = serialization.load_pem_private_key(data[layout.TLS_KEY], password=None)
        leaf = x509.load_pem_x509_certificates(data[layout.TLS_CERT])[0]
        return _raw_public(key.public_key()) == _raw_public(leaf.public_key())
    key = serialization.load_ssh_private_key(data[layout.SSH_PRIVATE_KEY], password=None)
    certificate = serialization.load_ssh_public_identity(data[layout.SSH_CERTIFICATE])
    assert isinstance(certificate, serialization.SSHCertificate)
    return _raw_public(key.public_key()) == _raw_public(certificate.public_key())


def assert_secrets_consistent(
    kube: Kube, namespace: str, certificates: dict[str, Obj]
) -> dict[str, SecretState]:
    """Each Certificate's Secret exists, holds the serial its status names, and its private
    key matches its certificate."""
    secrets = secret_snapshot(kube, namespace)
    for name, obj in certificates.items():
        secret = secrets.get(obj["spec"]["secretName"])
        assert secret is not None, f"{name}: no Secret"
        assert secret.serial == obj["status"]["serialNumber"], f"{name}: serial mismatch"
        assert key_matches_certificate(secret.data), f"{name}: key does not match certificate"
    return secrets


def audit_counts(operators: Iterable[OperatorProcess], namespace: str) -> Counter[str]:
    """KMS signatures per Certificate, as the operators' audit files record them (one
    record per signature, written before the certificate leaves the process)."""
    counts: Counter[str] = Counter()
    for operator in operators:
        for record in operator.audit_records():
            if record["certificate"]["namespace"] == namespace:
                counts[record["certificate"]["name"]] += 1
    return counts


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exposed")


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def retry_gap(obj: Obj) -> float:
    """nextRetryTime - lastFailureTime: the backoff the operator chose after the last failure."""
    status = obj.get("status") or {}
    return (
        parse_time(status["nextRetryTime"]) - parse_time(status["lastFailureTime"])
    ).total_seconds()


def delete_namespace(kube: Kube, name: str) -> None:
    try:
        kube.core.delete_namespace(name)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise


def signet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``signet ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "signet.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_signatures_accounted(
    operators: Iterable[OperatorProcess], kms_audit: Path, key_version: str
) -> int:
    """Every KMS signature made with ``key_version`` (a key of the test's own) has exactly
    one Signet audit record, matched one to one by `signet audit reconcile` against the
    emulator's data-access log, and every audit file's hash chain verifies. Returns the
    number of signatures."""
    files = [str(o.audit_log) for o in operators]
    verify = signet_cli("audit", "verify", *files)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    result = signet_cli(
        "audit",
        "reconcile",
        "--json",
        f"--kms-log={kms_audit}",
        f"--key-prefix={key_version}",
        *files,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sum(
        1
        for o in operators
        for r in o.audit_all()
        if r["kind"] == "signet.dev/signature" and r["keyVersion"] == key_version
    )

"""Run the real operator (`signet run`) as a child process against the test cluster.

A subprocess rather than an in-process kopf loop: it is what users run, its log can be
grepped for key material, and it can be killed and restarted like a pod.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signet.api import GROUP, VERSION
from signet_dev.controlplane import free_port
from tests.kube import Kube, eventually


@dataclass
class OperatorProcess:
    kubeconfig: Path
    kms_address: str
    folder: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.folder / "operator.log"

    @property
    def audit_log(self) -> Path:
        return self.folder / "audit.jsonl"

    def start(self, timeout: float = 60) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        command = [
            sys.executable,
            "-m",
            "signet.cli",
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--kms-emulator={self.kms_address}",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            f"--audit-log={self.audit_log}",
            "--log-format=json",
            "--kms-deadline=3",
            *self.extra_args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1
                ):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"operator not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text: str = r.read().decode()
            return text

    def audit_all(self) -> list[dict[str, Any]]:
        """Every record of the audit file, in order."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def audit_records(self, kind: str = "signet.dev/signature") -> list[dict[str, Any]]:
        """Records of one kind; by default the signatures made for Certificates."""
        return [
            r
            for r in self.audit_all()
            if r.get("kind") == kind
            and (kind != "signet.dev/signature" or r.get("purpose") == "certificate")
        ]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def get_certificate(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "certificates", name
    )
    return obj


def wait_condition(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 30,
    where: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    """Wait for the Certificate's Ready condition to have ``status`` (and ``reason``)."""

    def check() -> dict[str, Any] | None:
        obj = get_certificate(kube, namespace, name)
        ready = condition(obj, "Ready")
        generation = obj["metadata"].get("generation")
        if (
            ready.get("status") == status
            and (reason is None or ready.get("reason") == reason)
            and ready.get("observedGeneration") == generation
            and where(obj)
        ):
            return obj
        return None

    result: dict[str, Any] = eventually(
        check,
        timeout=timeout,
        interval=0.1,
        what=f"{namespace}/{name} Ready={status} {reason or ''}",
    )
    return result


def secret_data(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    secret = kube.core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def issuer_manifest(
    name: str, key_version: str, *, namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer" if namespace else "ClusterIssuer",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {"kms": {"cloudKMS": {"keyVersion": key_version}}, **spec},
    }
    body["spec"].setdefault("x509", {"selfSigned": {"commonName": f"{name} CA"}})
    body["spec"].setdefault("ssh", {"enabled": True})
    return body


def certificate_manifest(name: str, namespace: str, issuer: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"issuerRef": {"name": issuer}, "secretName": f"{name}-identity", **spec},
    }
    if "x509" not in spec and "ssh" not in spec:
        body["spec"]["x509"] = {"dnsNames": [f"{name}.{namespace}.svc"]}
    return body


def wait_issuer_ready(
    kube: Kube, namespace: str | None, name: str, timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if namespace:
            obj = kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "issuers", name
            )
        else:
            obj = kube.custom.get_cluster_custom_object(GROUP, VERSION, "clusterissuers", name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    result: dict[str, Any] = eventually(check, timeout=timeout, what=f"issuer {name} Ready")
    return result


def signatures(counters: Any, issuer: dict[str, Any]) -> int:
    """AsymmetricSign calls the emulator served for this issuer's key version."""
    count: int = counters.count(
        "AsymmetricSign", name=issuer["spec"]["kms"]["cloudKMS"]["keyVersion"]
    )
    return count

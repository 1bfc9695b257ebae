"""examples/mtls-spiffe: the example's own app.py completes mutual TLS with the issued
SVIDs and the published trust bundle, and each side checks the other's SPIFFE ID."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signet_dev.controlplane import free_port
from tests.kube import ROOT, Kube
from tests.operator.harness import secret_data, wait_condition

pytestmark = pytest.mark.cluster

APP = ROOT / "examples" / "mtls-spiffe" / "app.py"
NS = "mtls-spiffe"
FRONTEND = f"spiffe://cluster.local/ns/{NS}/sa/frontend"
BACKEND = f"spiffe://cluster.local/ns/{NS}/sa/backend"


def _identity(crds: Kube, secret: str, folder: Path) -> Path:
    folder.mkdir()
    for key, value in secret_data(crds, NS, secret).items():
        (folder / key).write_bytes(value)
    return folder


def _client(
    identity: Path, trust: Path, port: int, expect: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, str(APP), "client", f"--identity={identity}", f"--trust={trust}",
            f"--connect=127.0.0.1:{port}", f"--expect={expect}", "--once",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _deployment_volumes(crds: Kube) -> dict[str, dict[str, Any]]:
    rendered = crds.kubectl("kustomize", str(APP.parent)).stdout
    volumes = {}
    for doc in rendered.split("\n---\n"):
        if "kind: Deployment" in doc:
            created = crds.kubectl("create", "--dry-run=client", "-o=json", "-f", "-", input=doc)
            obj = json.loads(created.stdout)
            volumes[obj["metadata"]["name"]] = {
                v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]
            }
    return volumes


def test_frontend_and_backend_authenticate_each_other(
    crds: Kube, apply_example: Callable[[str], str], tmp_path: Path
) -> None:
    apply_example("mtls-spiffe")
    for name, spiffe_id in (("frontend", FRONTEND), ("backend", BACKEND)):
        cert = wait_condition(crds, NS, name)
        assert cert["status"]["spiffeID"] == spiffe_id

    # The Deployments mount exactly what Signet writes and publishes.
    bundle = crds.core.read_namespaced_config_map("signet-issuer-mesh-ca", NS)
    volumes = _deployment_volumes(crds)
    for name in ("frontend", "backend"):
        assert volumes[name]["identity"]["secret"]["secretName"] == f"{name}-svid"
        assert volumes[name]["trust"]["configMap"]["name"] == bundle.metadata.name

    trust = tmp_path / "ca.crt"
    trust.write_text(bundle.data["ca.crt"])
    frontend = _identity(crds, "frontend-svid", tmp_path / "frontend")
    backend = _identity(crds, "backend-svid", tmp_path / "backend")
    assert (frontend / "ca.crt").read_bytes() == trust.read_bytes()

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, str(APP), "server", f"--identity={backend}", f"--trust={trust}",
            "--host=127.0.0.1", f"--port={port}", f"--allow={FRONTEND}", "--max-connections=3",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("listening on 127.0.0.1:")
        # 1. frontend -> backend: both identities check out.
        ok = _client(frontend, trust, port, BACKEND)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.strip() == f"server {BACKEND} says: hello {FRONTEND}"
        # 2. The backend's own SVID is a valid certificate but not an allowed caller.
        refused = _client(backend, trust, port, BACKEND)
        assert refused.returncode == 1
        assert "refused" in refused.stdout
        # 3. A client expecting someone else aborts after the handshake.
        wrong = _client(frontend, trust, port, f"spiffe://cluster.local/ns/{NS}/sa/db")
        assert wrong.returncode == 1
        assert wrong.stdout.strip() == (
            f"unexpected server identity {BACKEND}, wanted spiffe://cluster.local/ns/{NS}/sa/db"
        )
        server_log, _ = server.communicate(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert server_log.splitlines()[:2] == [f"accepted {FRONTEND}", f"refused {BACKEND}"]

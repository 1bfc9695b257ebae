"""Runs last (module name): no private key material anywhere but in Secrets' data.

Searched: every operator log and audit file of the session (the session operator's and
those of replicas other tests started), every Event in every namespace, the status of every
Certificate, Issuer and ClusterIssuer, and the annotations of every object of those kinds and
of Secrets, ConfigMaps, Namespaces and kopf peerings. Searched for: the PEM marker, and
fragments of every private key actually held in a Secret (base64 of the DER inside the PEM,
and base64 of the PEM as Secret data encodes it).

The test issues a few identities of its own first, including failures that handle key
material (a corrupted key to repair, a foreign Secret holding a key), so it proves something
even when run alone.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.kube import Kube
from tests.operator.harness import OperatorProcess, certificate_manifest, wait_condition
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import poll, secret_snapshot, signet_cli

pytestmark = pytest.mark.cluster

PEM_MARKER = "PRIVATE KEY-----"
FRAGMENT = 24
KEY_FIELDS = ("tls.key", "ssh-privatekey")


def _key_fragments(pem: bytes) -> set[str]:
    """Distinctive substrings of a private key as it could leak: the base64 body of the PEM
    (taken from its middle lines) and the base64 of the whole PEM."""
    lines = [line for line in pem.decode().splitlines() if line and "-----" not in line]
    body = "".join(lines)
    fragments = {body[i : i + FRAGMENT] for i in range(16, max(17, len(body) - FRAGMENT), 97)}
    encoded = base64.b64encode(pem).decode()
    fragments |= {encoded[i : i + FRAGMENT] for i in range(40, len(encoded) - FRAGMENT, 131)}
    return {f for f in fragments if len(f) == FRAGMENT}


def _annotations(items: list[Any]) -> list[str]:
    return [json.dumps(i.metadata.annotations or {}) for i in items]


def _api_texts(kube: Kube) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    events = kube.core.list_event_for_all_namespaces().items
    texts["events"] = [f"{e.reason} {e.message} {e.metadata.annotations}" for e in events]
    for plural in ("certificates", "issuers"):
        objs = kube.custom.list_cluster_custom_object("signet.dev", "v1alpha1", plural)["items"]
        texts[plural] = [
            json.dumps({"status": o.get("status"), "annotations": o["metadata"].get("annotations")})
            for o in objs
        ]
    clusterissuers = kube.custom.list_cluster_custom_object(
        "signet.dev", "v1alpha1", "clusterissuers"
    )["items"]
    texts["clusterissuers"] = [
        json.dumps({"status": o.get("status"), "annotations": o["metadata"].get("annotations")})
        for o in clusterissuers
    ]
    peerings = kube.custom.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")
    texts["peerings"] = [json.dumps(o) for o in peerings["items"]]
    texts["secret annotations"] = _annotations(kube.core.list_secret_for_all_namespaces().items)
    texts["configmap annotations"] = _annotations(
        kube.core.list_config_map_for_all_namespaces().items
    )
    texts["configmaps"] = [
        json.dumps(c.data or {}) for c in kube.core.list_config_map_for_all_namespaces().items
    ]
    texts["namespace annotations"] = _annotations(kube.core.list_namespace().items)
    return texts


def _operator_files(base: Path) -> list[Path]:
    return sorted([*base.rglob("operator.log"), *base.rglob("audit.jsonl")])


def test_no_private_key_material_outside_secrets(
    crds: Kube,
    namespace: str,
    issuer: dict[str, Any],
    signet_operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
    record: Recorder,
) -> None:
    requests = {
        "rsa": {"privateKey": {"algorithm": "RSA", "size": 2048}},
        "ec": {"privateKey": {"algorithm": "ECDSA", "size": 384}},
        "ed": {"privateKey": {"algorithm": "Ed25519"}},
        "ssh": {"ssh": {"type": "user", "principals": [f"{namespace}-ops"]}},
    }
    for name, fields in requests.items():
        crds.apply(certificate_manifest(name, namespace, "ca", **fields))
    for name in requests:
        wait_condition(crds, namespace, name, timeout=60)
    # a managed Secret whose key was corrupted, keeping a PEM-looking prefix: repaired by
    # re-issuing, and the broken key must not be quoted anywhere
    broken = secret_snapshot(crds, namespace)["ec-identity"]
    truncated = broken.data["tls.key"][:120]
    crds.core.patch_namespaced_secret(
        "ec-identity", namespace, {"data": {"tls.key": base64.b64encode(truncated).decode()}}
    )
    poll(
        lambda: secret_snapshot(crds, namespace)["ec-identity"].serial != broken.serial,
        timeout=30,
        what="corrupted key repaired",
    )
    # a foreign Secret holding a private key, claimed by a Certificate: refused, not echoed
    foreign_key = secret_snapshot(crds, namespace)["rsa-identity"].data["tls.key"]
    crds.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "foreign"},
            "data": {"tls.key": base64.b64encode(foreign_key).decode()},
        },
    )
    crds.apply(certificate_manifest("claims-foreign", namespace, "ca", secretName="foreign"))
    wait_condition(crds, namespace, "claims-foreign", status="False", reason="SecretNotManaged")

    fragments: set[str] = set()
    keys = 0
    for secret in crds.core.list_secret_for_all_namespaces().items:
        for field in KEY_FIELDS:
            if secret.data and field in secret.data:
                pem = base64.b64decode(secret.data[field])
                if b"PRIVATE KEY" in pem:
                    keys += 1
                    fragments |= _key_fragments(pem)
    fragments |= _key_fragments(broken.data["tls.key"])
    assert keys >= len(requests) and fragments

    hits: list[str] = []
    files = _operator_files(tmp_path_factory.getbasetemp())
    assert signet_operator.log in files
    sources: dict[str, list[str]] = {
        str(f): f.read_text(errors="replace").splitlines() for f in files
    }
    sources.update(_api_texts(crds))
    pattern = re.compile("|".join(re.escape(f) for f in sorted(fragments)))
    lines = 0
    for source, texts in sources.items():
        for text in texts:
            lines += 1
            if PEM_MARKER in text or pattern.search(text):
                hits.append(f"{source}: {text[:200]}")
    record(
        "secrets hygiene scan",
        f"{keys} private keys, {len(fragments)} fragments searched in {len(files)} operator "
        f"files and the API ({lines} lines/objects): {len(hits)} hits",
        None,
    )
    assert not hits, "\n".join(hits[:10])


def _is_kms_log(path: Path) -> bool:
    """The KMS emulator's data-access log (Cloud Audit Logs entries) shares the file name."""
    with path.open(encoding="utf-8") as lines:
        first = next(lines, "")
    return '"protoPayload"' in first


def test_every_audit_file_of_the_session_verifies(
    crds: Kube,
    namespace: str,
    issuer: dict[str, Any],
    signet_operator: OperatorProcess,
    tmp_path_factory: pytest.TempPathFactory,
    record: Recorder,
) -> None:
    """Every audit file written in this session (the session operator's, replicas', the
    proxied and killed operators') is an unbroken hash chain, restarts and kills included;
    and the check is not vacuous: one changed record in a copy is found."""
    crds.apply(certificate_manifest("audited", namespace, "ca"))
    wait_condition(crds, namespace, "audited", timeout=60)
    files = [
        path
        for path in sorted(tmp_path_factory.getbasetemp().rglob("audit.jsonl"))
        if not _is_kms_log(path)
    ]
    assert signet_operator.audit_log in files
    for path in files:
        result = signet_cli("audit", "verify", str(path))
        assert result.returncode == 0, f"{path}: {result.stdout}{result.stderr}"
    lines = signet_operator.audit_log.read_text().splitlines()
    assert len(lines) > 2
    tampered = tmp_path_factory.mktemp("tampered") / "copy.jsonl"
    changed = json.loads(lines[1])
    changed["time"] = "2000-01-01T00:00:00.000+00:00"
    lines[1] = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    tampered.write_text("\n".join(lines) + "\n")
    assert signet_cli("audit", "verify", str(tampered)).returncode == 1
    record(
        "audit chains of the session",
        f"{len(files)} audit files verified (restarts and SIGKILL included); a changed record "
        "in a copy is reported",
        None,
    )

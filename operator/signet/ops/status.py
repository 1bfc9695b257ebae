"""``signet status``: every Certificate, issuer and certificate request in one screen,
problems spelled out.

``kubectl get`` shows one kind at a time and hides the condition message; when something
is not Ready the first question is always "which issuer, and why?", so the tables come
together and each non-Ready object's message is printed under them. Kubernetes' own
certificate requests for Signet's signers are listed too, when there are any: a pod whose
PodCertificateRequest is pending or denied waits in ContainerCreating with no word of why
on the pod itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException

from signet.api import GROUP, VERSION
from signet.decisions.podcertificate import is_ours
from signet.ops.kube import Cluster, api_error

_KINDS = {"issuers": "Issuer", "clusterissuers": "ClusterIssuer"}


@dataclass(frozen=True)
class Row:
    """One object's line; ``message`` is shown under the table when it is not Ready."""

    cells: tuple[str, ...]
    ready: str
    message: str
    ident: str


def _ready(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def certificate_row(obj: Mapping[str, Any], with_namespace: bool) -> Row:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = _ready(obj)
    ref = spec.get("issuerRef") or {}
    issuer = ref.get("name", "")
    if ref.get("kind") == "ClusterIssuer":
        issuer = f"ClusterIssuer/{issuer}"
    kind = "ssh " + (spec.get("ssh") or {}).get("type", "") if "ssh" in spec else "x509"
    cells = (
        *((meta["namespace"],) if with_namespace else ()),
        meta["name"],
        ready.get("status", "Unknown"),
        ready.get("reason", ""),
        kind,
        spec.get("secretName", ""),
        issuer,
        status.get("notAfter", ""),
        status.get("renewalTime", ""),
    )
    return Row(
        tuple(str(c) for c in cells),
        str(ready.get("status", "Unknown")),
        str(ready.get("message", "no Ready condition yet")),
        f"Certificate {meta['namespace']}/{meta['name']}",
    )


def issuer_row(obj: Mapping[str, Any], with_namespace: bool) -> Row:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ready = _ready(obj)
    namespace = meta.get("namespace")
    cells = (
        *((namespace or "",) if with_namespace else ()),
        obj.get("kind", "Issuer"),
        meta["name"],
        ready.get("status", "Unknown"),
        ready.get("reason", ""),
        status.get("keyAlgorithm", ""),
        ((spec.get("kms") or {}).get("cloudKMS") or {}).get("keyVersion", ""),
        (status.get("rotation") or {}).get("progress", "Stable"),
    )
    where = f"{namespace}/{meta['name']}" if namespace else meta["name"]
    return Row(
        tuple(str(c) for c in cells),
        str(ready.get("status", "Unknown")),
        str(ready.get("message", "no Ready condition yet")),
        f"{obj.get('kind', 'Issuer')} {where}",
    )


def _answer(status: Mapping[str, Any], types: tuple[str, ...]) -> Mapping[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") in types and cond.get("status", "True") == "True":
            return dict(cond)
    return {}


def pod_request_row(obj: Mapping[str, Any]) -> Row:
    """Pending until Signet answers; Issued, Denied or Failed after (the answer is final)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    answer = _answer(status, ("Issued", "Denied", "Failed"))
    state = str(answer.get("type", "Pending"))
    cells = (
        meta.get("namespace", ""),
        f"pcr/{meta['name']}",
        spec.get("signerName", ""),
        f"pod/{spec.get('podName', '')}",
        state,
        answer.get("reason", ""),
        status.get("notAfter", ""),
    )
    return Row(
        tuple(str(c) for c in cells),
        "True" if state == "Issued" else "False",
        str(answer.get("message", "not answered yet")),
        f"PodCertificateRequest {meta.get('namespace', '')}/{meta['name']}",
    )


def signing_request_row(obj: Mapping[str, Any]) -> Row:
    """Signet signs a CSR only once it is approved, so an unapproved one is not a problem
    of Signet's (it waits for its approver) and neither is one the approver denied."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    verdict = _answer(status, ("Denied", "Failed"))
    if verdict:
        state = str(verdict["type"])
    elif status.get("certificate"):
        state = "Issued"
    elif _answer(status, ("Approved",)):
        state = "Approved"
    else:
        state = "Unapproved"
    cells = ("", f"csr/{meta['name']}", spec.get("signerName", ""), spec.get("username", ""))
    problem = state in ("Approved", "Failed")
    message = "approved, not signed yet" if state == "Approved" else verdict.get("message", "")
    return Row(
        tuple(str(c) for c in (*cells, state, verdict.get("reason", ""), "")),
        "False" if problem else "True",
        str(message),
        f"CertificateSigningRequest {meta['name']}",
    )


def _requests(cluster: Cluster, namespace: str | None) -> list[Row]:
    """Requests for Signet's signers in scope: a namespace's PodCertificateRequests, and
    the CSRs its ServiceAccounts made (CSRs belong to no namespace)."""
    api = cluster.custom
    try:
        if namespace is None:
            pcrs = api.list_cluster_custom_object(
                "certificates.k8s.io", "v1", "podcertificaterequests"
            )
        else:
            pcrs = api.list_namespaced_custom_object(
                "certificates.k8s.io", "v1", namespace, "podcertificaterequests"
            )
        csrs = api.list_cluster_custom_object(
            "certificates.k8s.io", "v1", "certificatesigningrequests"
        )
    except ApiException as error:
        raise api_error(error, "listing certificate requests") from None
    rows = [
        pod_request_row(item)
        for item in pcrs.get("items") or []
        if is_ours(str((item.get("spec") or {}).get("signerName") or ""))
    ]
    prefix = None if namespace is None else f"system:serviceaccount:{namespace}:"
    for item in csrs.get("items") or []:
        spec = item.get("spec") or {}
        if not is_ours(str(spec.get("signerName") or "")):
            continue
        if prefix is None or str(spec.get("username") or "").startswith(prefix):
            rows.append(signing_request_row(item))
    return sorted(rows, key=lambda r: r.cells[:2])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl's layout: upper-case headers, columns padded to the widest cell."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines)


def _list(cluster: Cluster, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    try:
        if plural == "clusterissuers" or namespace is None:
            result = cluster.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            result = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    except ApiException as error:
        raise api_error(error, f"listing {plural}") from None
    items: list[dict[str, Any]] = list(result.get("items") or [])
    for item in items:
        item.setdefault(
            "kind", {"issuers": "Issuer", "clusterissuers": "ClusterIssuer"}.get(plural)
        )
    return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def status(cluster: Cluster, namespace: str | None) -> tuple[str, bool]:
    """The report text and whether everything is Ready. ``namespace=None`` means all.

    ClusterIssuers are always listed: any of them may be what a namespace's Certificates
    are waiting for.
    """
    all_ns = namespace is None
    certificates = [certificate_row(c, all_ns) for c in _list(cluster, "certificates", namespace)]
    issuers = [issuer_row(i, True) for i in _list(cluster, "issuers", namespace)] + [
        issuer_row(i, True) for i in _list(cluster, "clusterissuers", None)
    ]
    scope = "all namespaces" if all_ns else f"namespace {namespace}"
    out: list[str] = []
    if certificates:
        header = (
            *(("NAMESPACE",) if all_ns else ()),
            "CERTIFICATE",
            "READY",
            "REASON",
            "KIND",
            "SECRET",
            "ISSUER",
            "NOT AFTER",
            "RENEWAL TIME",
        )
        out.append(table(header, [r.cells for r in certificates]))
    else:
        out.append(f"No Certificates in {scope}.")
    out.append("")
    if issuers:
        header = (
            "NAMESPACE",
            "KIND",
            "ISSUER",
            "READY",
            "REASON",
            "ALGORITHM",
            "KEY VERSION",
            "ROTATION",
        )
        out.append(table(header, [r.cells for r in issuers]))
    else:
        out.append("No Issuers or ClusterIssuers.")
    requests = _requests(cluster, namespace)
    if requests:
        header = ("NAMESPACE", "REQUEST", "SIGNER", "FOR", "STATE", "REASON", "NOT AFTER")
        out += ["", table(header, [r.cells for r in requests])]
    problems = [r for r in (*certificates, *issuers, *requests) if r.ready != "True"]
    if problems:
        out += ["", "Not ready:"]
        out += [f"  {r.ident}: {r.message}" for r in problems]
    return "\n".join(out), not problems

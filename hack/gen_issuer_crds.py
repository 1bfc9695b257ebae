"""Render the Issuer and ClusterIssuer CRDs from one shared spec (hack/issuer-spec.yaml).

The two kinds differ only in scope, in ClusterIssuer.spec.namespaceSelector and in the
namespace of the CA chain Secret; keeping one source avoids two hand-edited copies that
drift apart. Run `python hack/gen_issuer_crds.py` after editing the spec.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "hack" / "issuer-spec.yaml"

_CLUSTER_NAMESPACE_FIELD = """\
          namespace:
            type: string
            description: >-
              Namespace of the Secret (ClusterIssuer only; default the operator's namespace).
            maxLength: 63
            pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"""

_NAMESPACE_SELECTOR = """\
  namespaceSelector:
    type: object
    description: >-
      Which namespaces may use this ClusterIssuer (a label selector over Namespaces).
      Unset or empty selects every namespace.
    properties:
      matchLabels:
        type: object
        additionalProperties: {type: string}
        maxProperties: 32
      matchExpressions:
        type: array
        maxItems: 16
        items:
          type: object
          required: [key, operator]
          properties:
            key: {type: string, maxLength: 317}
            operator: {type: string, enum: [In, NotIn, Exists, DoesNotExist]}
            values: {type: array, maxItems: 64, items: {type: string, maxLength: 63}}"""

_ANCHOR = {
    "type": "object",
    "description": "A key version and the trust anchors of its leaves.",
    "properties": {
        "keyVersion": {"type": "string"},
        "caBundle": {"type": "string", "description": "PEM chain of the key's CA."},
        "sshCAPublicKey": {"type": "string", "description": "authorized_keys line."},
    },
}

_STATUS = {
    "type": "object",
    "description": "What Signet found when it checked this issuer.",
    "properties": {
        "conditions": {
            "type": "array",
            "description": "Ready: the KMS key answered and the CA material is valid.",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string", "description": "Ready."},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string", "description": "One CamelCase word."},
                    "message": {"type": "string", "description": "What happened."},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                    "observedGeneration": {"type": "integer", "format": "int64"},
                },
            },
        },
        "keyVersion": {"type": "string", "description": "The key version that signs now."},
        "keyAlgorithm": {"type": "string", "description": "KMS algorithm of the key version."},
        "caCertificate": {"type": "string", "description": "PEM CA certificate of the KMS key."},
        "caBundle": {"type": "string", "description": "PEM chain up to and including the root."},
        "caFingerprint": {"type": "string", "description": "SHA-256 of the CA certificate."},
        "caNotAfter": {"type": "string", "format": "date-time"},
        "sshCAPublicKey": {"type": "string", "description": "authorized_keys line of the SSH CA."},
        "sshCAFingerprint": {"type": "string", "description": "SHA256: fingerprint of the SSH CA."},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "rotation": {
            "type": "object",
            "description": "A key rotation in progress; absent when the issuer is Stable.",
            "properties": {
                "phase": {"type": "string", "enum": ["Propagating", "Reissuing", "Retiring"]},
                "progress": {"type": "string", "description": "The phase, or Reissuing n/m."},
                "from": _ANCHOR,
                "to": _ANCHOR,
                "startedAt": {"type": "string", "format": "date-time"},
                "phaseSince": {"type": "string", "format": "date-time"},
                "trustPublishedAt": {"type": "string", "format": "date-time"},
                "leaves": {"type": "integer", "description": "Old-key leaves to re-issue."},
                "remaining": {"type": "integer", "description": "Old-key leaves still valid."},
                "retireAfter": {"type": "string", "format": "date-time"},
            },
        },
    },
}


def render(kind: str) -> dict[str, object]:
    cluster = kind == "ClusterIssuer"
    text = SPEC.read_text() % {
        "NAMESPACE_FIELD": _CLUSTER_NAMESPACE_FIELD if cluster else "",
        "NAMESPACE_SELECTOR": _NAMESPACE_SELECTOR if cluster else "",
    }
    spec = yaml.safe_load(text)
    plural = kind.lower() + "s"
    short = "sigciss" if cluster else "sigiss"
    scope = (
        "A ClusterIssuer serves Certificates of every selected namespace"
        if cluster
        else "An Issuer serves Certificates of its own namespace"
    )
    summary = (
        f"{scope}: it names the CA key (a Cloud KMS key version or a PKCS#11 key) and the policy"
        " that bounds what may be issued."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.signet.dev",
            "labels": {"app.kubernetes.io/name": "signet"},
        },
        "spec": {
            "group": "signet.dev",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["signet"],
            },
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Algorithm", "type": "string", "jsonPath": ".status.keyAlgorithm"},
                        {
                            "name": "Rotation",
                            "type": "string",
                            "jsonPath": ".status.rotation.progress",
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": summary,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _STATUS,
                            },
                        }
                    },
                }
            ],
        },
    }


def rendered_files() -> dict[Path, str]:
    header = "# Generated by hack/gen_issuer_crds.py from hack/issuer-spec.yaml. Do not edit.\n"
    return {
        ROOT / "crds" / f"{kind.lower()}s.signet.dev.yaml": header
        + yaml.safe_dump(render(kind), sort_keys=False, allow_unicode=True, width=100)
        for kind in ("Issuer", "ClusterIssuer")
    }


def main() -> int:
    for path, text in rendered_files().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

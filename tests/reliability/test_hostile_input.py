"""Hostile and malformed Certificates: every one is rejected at apply with a message that
names the problem, or refused by the operator with Ready=False and a precise reason. A
healthy canary Certificate in the same namespace keeps its Secret and serial throughout,
and the operator's memory and work queue stay bounded.

One namespace and issuer serve the whole module (a namespace per case would cost minutes).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signet.kms.emulator import Counters
from tests.kube import Kube
from tests.operator.harness import (
    GROUP,
    VERSION,
    OperatorProcess,
    condition,
    get_certificate,
    in_namespace,
    issuer_manifest,
    wait_condition,
    wait_issuer_ready,
)
from tests.reliability.conftest import Recorder
from tests.reliability.helpers import (
    KeyFactory,
    delete_namespace,
    metric,
    poll,
    rss_kib,
    secret_snapshot,
)

pytestmark = pytest.mark.cluster

DROP = object()
"""A spec value meaning "leave this field out"."""
MB10 = 10 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 64 * 1024
CYRILLIC_IE = "\u0435"  # looks like "e"
RTL_OVERRIDE = "\u202e"
ZERO_WIDTH_SPACE = "\u200b"


@dataclass(frozen=True)
class Env:
    namespace: str
    foreign_namespace: str
    canary_serial: str
    canary_secret_version: str
    unrelated_data: dict[str, bytes]
    rss_before_kib: int


@dataclass(frozen=True)
class Case:
    id: str
    spec: Callable[[str], dict[str, Any]]
    rejected: str | None = None
    """Substring of kubectl's error: the apiserver refused the object."""
    reason: str | None = None
    """Ready=False reason the operator must set."""
    message: str | None = None
    """Substring of the Ready message (``{ns}`` is the namespace)."""
    issued: bool = False
    """A legal if odd request: must be issued, without disturbing anything."""


def x509(**fields: Any) -> Callable[[str], dict[str, Any]]:
    return lambda ns: {"x509": {k: in_namespace(v, ns) for k, v in fields.items()}}


def ssh(**fields: Any) -> Callable[[str], dict[str, Any]]:
    return lambda ns: {"ssh": {k: in_namespace(v, ns) for k, v in fields.items()}}


def spec(**fields: Any) -> Callable[[str], dict[str, Any]]:
    """Top-level spec fields; an X.509 request for a legal name unless given."""
    return lambda ns: {
        "x509": {"dnsNames": [f"legal.{ns}.svc"]},
        **{k: in_namespace(v, ns) for k, v in fields.items()},
    }


PATTERN = "should match"
SSH_USER = {"type": "user", "principals": ["{ns}-ops"]}

CASES = [
    # -- wrong types and shapes ----------------------------------------------------------
    Case("dnsnames-not-a-list", x509(dnsNames="a.{ns}.svc"), rejected="must be of type array"),
    Case("dnsname-integer", x509(dnsNames=[42]), rejected="must be of type string"),
    Case("duration-integer", spec(duration=3600), rejected="must be of type string"),
    Case(
        "key-size-string",
        spec(privateKey={"algorithm": "ECDSA", "size": "256"}),
        rejected="must be of type integer",
    ),
    Case("issuerref-string", spec(issuerRef="ca"), rejected="must be of type object"),
    Case("secretname-missing", spec(secretName=DROP), rejected="secretName: Required value"),
    Case(
        "x509-and-ssh",
        spec(ssh=SSH_USER),
        rejected="exactly one of spec.x509 or spec.ssh must be set",
    ),
    Case(
        "neither-x509-nor-ssh",
        spec(x509=DROP),
        rejected="exactly one of spec.x509 or spec.ssh must be set",
    ),
    Case("x509-empty", x509(), rejected="needs at least one of commonName"),
    # -- sizes -----------------------------------------------------------------------------
    Case(
        "dnsnames-101",
        x509(dnsNames=[f"n{i}.{{ns}}.svc" for i in range(101)]),
        rejected="must have at most 100 items",
    ),
    Case(
        "dnsnames-5000",
        x509(dnsNames=[f"n{i}.{{ns}}.svc" for i in range(5000)]),
        rejected="must have at most 100 items",
    ),
    Case("commonname-10mb", x509(commonName="a" * MB10), rejected="Request entity too large"),
    Case("dnsname-10mb", x509(dnsNames=["a" * MB10]), rejected="Request entity too large"),
    Case("commonname-65-chars", x509(commonName="c" * 65), rejected="Too long"),
    Case(
        "secret-template-annotation-5000",
        spec(secretTemplate={"annotations": {"a": "v" * 5000}}),
        rejected="Too long",
    ),
    Case(
        "dnsnames-100-legal",
        x509(dnsNames=[f"n{i}.{{ns}}.svc" for i in range(100)]),
        issued=True,
    ),
    # -- invalid DNS names ---------------------------------------------------------------------
    Case("dns-uppercase", x509(dnsNames=["Web.{ns}.svc"]), rejected=PATTERN),
    Case("dns-leading-hyphen", x509(dnsNames=["-web.{ns}.svc"]), rejected=PATTERN),
    Case("dns-empty-label", x509(dnsNames=["web..{ns}.svc"]), rejected=PATTERN),
    Case("dns-underscore", x509(dnsNames=["we_b.{ns}.svc"]), rejected=PATTERN),
    Case("dns-trailing-dot", x509(dnsNames=["web.{ns}.svc."]), rejected=PATTERN),
    Case("dns-label-64", x509(dnsNames=["w" * 64 + ".{ns}.svc"]), rejected=PATTERN),
    Case("dns-space", x509(dnsNames=["we b.{ns}.svc"]), rejected=PATTERN),
    # -- wildcard abuse --------------------------------------------------------------------
    Case("wildcard-two-labels", x509(dnsNames=["*.*.svc"]), rejected=PATTERN),
    Case("wildcard-alone", x509(dnsNames=["*"]), rejected=PATTERN),
    Case("wildcard-middle", x509(dnsNames=["a.*.svc"]), rejected=PATTERN),
    Case("wildcard-partial-label", x509(dnsNames=["a*.{ns}.svc"]), rejected=PATTERN),
    Case(
        "wildcard-outside-namespace",
        x509(dnsNames=["*.svc"]),
        reason="DNSNameNotAllowed",
        message="spec.x509.dnsNames[0] '*.svc' is not allowed: it matches none of "
        "policy.allowedDNSNames",
    ),
    Case(
        "wildcard-own-namespace",
        x509(dnsNames=["*.{ns}.svc"]),
        reason="WildcardNotAllowed",
        message="spec.x509.dnsNames[0] '*.{ns}.svc' is a wildcard, which is not allowed: "
        "policy.allowWildcards is false",
    ),
    Case(
        "wildcard-common-name",
        x509(commonName="*.{ns}.svc"),
        reason="WildcardNotAllowed",
        message="spec.x509.commonName '*.{ns}.svc' is a wildcard, which is not allowed: "
        "policy.allowWildcards is false",
    ),
    # -- unicode tricks ----------------------------------------------------------------------
    Case("dns-homoglyph", x509(dnsNames=[f"w{CYRILLIC_IE}b.{{ns}}.svc"]), rejected=PATTERN),
    Case("dns-rtl-override", x509(dnsNames=[f"web{RTL_OVERRIDE}.{{ns}}.svc"]), rejected=PATTERN),
    Case("dns-nul", x509(dnsNames=["web\x00.{ns}.svc"]), rejected=PATTERN),
    Case("dns-zero-width", x509(dnsNames=[f"we{ZERO_WIDTH_SPACE}b.{{ns}}.svc"]), rejected=PATTERN),
    Case(
        "commonname-nul",
        x509(commonName="web\x00.{ns}.svc"),
        reason="InvalidRequest",
        message="common name 'web\\x00.{ns}.svc' must not contain control characters",
    ),
    Case(
        "commonname-rtl-override",
        x509(commonName=f"web.{RTL_OVERRIDE}{{ns}}.svc"),
        reason="CommonNameNotAllowed",
        message="policy.allowedDNSNames",
    ),
    # -- IP addresses, emails, URIs ----------------------------------------------------------
    Case("ip-out-of-range", x509(ipAddresses=["999.1.1.1"]), rejected="IPv4 or IPv6 address"),
    Case("ip-with-prefix", x509(ipAddresses=["10.0.0.1/8"]), rejected="IPv4 or IPv6 address"),
    Case("ip-leading-space", x509(ipAddresses=[" 10.0.0.1"]), rejected="IPv4 or IPv6 address"),
    Case("ip-zone", x509(ipAddresses=["fe80::1%eth0"]), rejected="IPv4 or IPv6 address"),
    Case(
        "ip-not-in-policy",
        x509(ipAddresses=["127.0.0.1"]),
        reason="IPAddressNotAllowed",
        message="spec.x509.ipAddresses[0] '127.0.0.1' is not allowed: policy.allowedIPRanges "
        "is empty, so none are granted",
    ),
    Case("email-two-at", x509(emailAddresses=["a@b@c"]), rejected=PATTERN),
    Case(
        "email-not-in-policy",
        x509(emailAddresses=["root@example.com"]),
        reason="EmailAddressNotAllowed",
        message="'root@example.com' is not allowed: policy.allowedEmailAddresses is empty",
    ),
    Case("uri-not-absolute", x509(uris=["not a uri"]), rejected="must be an absolute URI"),
    Case(
        "uri-foreign-scheme",
        x509(uris=["https://evil.example/"]),
        reason="URINotAllowed",
        message="spec.x509.uris[0] 'https://evil.example/' is not allowed",
    ),
    Case(
        "spiffe-with-uris",
        x509(spiffe={"serviceAccount": "web"}, uris=["https://a.example/"]),
        rejected="do not combine spiffe with uris",
    ),
    Case(
        "spiffe-scheme-case",
        x509(uris=["SPIFFE://cluster.local/ns/{ns}/sa/web"]),
        reason="URINotAllowed",
        message="spec.x509.uris[0] 'SPIFFE://cluster.local/ns/{ns}/sa/web' is not allowed: it "
        "matches none of policy.allowedURIs",
    ),
    Case(
        "spiffe-id-in-uris",
        x509(uris=["spiffe://cluster.local/ns/{ns}/sa/a"]),
        reason="InvalidRequest",
        message="spec.x509.uris[0] 'spiffe://cluster.local/ns/{ns}/sa/a' is a SPIFFE ID, which "
        "spec.x509.uris cannot carry: set spec.x509.spiffe.serviceAccount to 'a' instead",
    ),
    Case(
        "spiffe-percent-encoded-traversal",
        x509(uris=["spiffe://cluster.local/ns/{ns}/sa/..%2F..%2Fx"]),
        reason="SPIFFEIDNotAllowed",
        message="spec.x509.uris[0] 'spiffe://cluster.local/ns/{ns}/sa/..%2F..%2Fx' is not a "
        "valid SPIFFE ID: SPIFFE IDs must not contain percent-encoding",
    ),
    Case(
        "spiffe-client-auth-only",
        x509(spiffe={"serviceAccount": "web"}, usages=["digital signature", "client auth"]),
        rejected="a SPIFFE X509-SVID with extended key usages must include both 'server auth' "
        "and 'client auth'",
    ),
    Case(
        "spiffe-both-auth-usages",
        x509(spiffe={"serviceAccount": "web"}, usages=["client auth", "server auth"]),
        issued=True,
    ),
    Case(
        "spiffe-dot-segments",
        x509(uris=["spiffe://cluster.local/ns/{ns}/sa/../../../ns/kube-system/sa/admin"]),
        reason="SPIFFEIDNotAllowed",
        message="is not one of this namespace's identities",
    ),
    # -- durations ---------------------------------------------------------------------------
    Case("duration-zero", spec(duration="0s"), rejected="duration must be between 1m and 87600h"),
    Case("duration-negative", spec(duration="-1h"), rejected=PATTERN),
    Case(
        "duration-century",
        spec(duration="876000h"),
        rejected="duration must be between 1m and 87600h",
    ),
    Case("duration-years-unit", spec(duration="100y"), rejected=PATTERN),
    Case(
        "duration-over-policy",
        spec(duration="87600h"),
        reason="DurationTooLong",
        message="exceeds policy.maxDuration",
    ),
    Case(
        "renewbefore-longer-than-duration",
        spec(duration="1h", renewBefore="2h"),
        rejected="spec.renewBefore must be shorter than spec.duration",
    ),
    # -- keys and CA-ness ----------------------------------------------------------------------
    Case("key-algorithm-dsa", spec(privateKey={"algorithm": "DSA"}), rejected="Unsupported value"),
    Case(
        "key-rsa-1024",
        spec(privateKey={"algorithm": "RSA", "size": 1024}),
        rejected="RSA keys must be 2048, 3072 or 4096 bits",
    ),
    Case(
        "key-ecdsa-224",
        spec(privateKey={"algorithm": "ECDSA", "size": 224}),
        rejected="ECDSA keys must be 256 (P-256), 384 (P-384) or 521 (P-521) bits",
    ),
    Case(
        "key-ed25519-with-size",
        spec(privateKey={"algorithm": "Ed25519", "size": 256}),
        rejected="Ed25519 keys have no size",
    ),
    Case(
        "x509-isca",
        x509(dnsNames=["ca.{ns}.svc"], isCA=True),
        rejected='unknown field "spec.x509.isCA"',
    ),
    Case("spec-isca", spec(isCA=True), rejected='unknown field "spec.isCA"'),
    Case(
        "usage-cert-sign",
        x509(dnsNames=["web.{ns}.svc"], usages=["cert sign"]),
        rejected="cert sign and crl sign are refused",
    ),
    # -- SSH ---------------------------------------------------------------------------------------
    Case("ssh-principal-comma", ssh(type="user", principals=["{ns}-a,root"]), rejected=PATTERN),
    Case("ssh-principal-newline", ssh(type="user", principals=["{ns}-a\nroot"]), rejected=PATTERN),
    Case("ssh-no-principals", ssh(type="user", principals=[]), rejected="at least 1 items"),
    Case(
        "ssh-host-critical-options",
        ssh(type="host", principals=["{ns}-db"], criticalOptions={"forceCommand": "id"}),
        rejected="host certificates carry no critical options or extensions",
    ),
    Case(
        "ssh-host-extensions",
        ssh(type="host", principals=["{ns}-db"], extensions=["permit-pty"]),
        rejected="host certificates carry no critical options or extensions",
    ),
    Case(
        "ssh-force-command-newline",
        ssh(type="user", principals=["{ns}-a"], criticalOptions={"forceCommand": "id\nsh"}),
        rejected=PATTERN,
    ),
    Case(
        "ssh-source-address-garbage",
        ssh(type="user", principals=["{ns}-a"], criticalOptions={"sourceAddress": ["anywhere"]}),
        rejected="must be an IP address or CIDR",
    ),
    Case(
        "ssh-force-command",
        ssh(type="user", principals=["{ns}-a"], criticalOptions={"forceCommand": "/bin/sh"}),
        reason="SSHCriticalOptionNotAllowed",
        message="spec.ssh.criticalOptions.forceCommand '/bin/sh' (force-command) is not "
        "allowed: it is not in policy.allowedSSHCriticalOptions ['source-address']",
    ),
    *(
        Case(
            f"ssh-{extension.lower()}",
            ssh(type="user", principals=["{ns}-a"], extensions=["permit-pty", extension]),
            reason="SSHExtensionNotAllowed",
            message=f"spec.ssh.extensions[1] {extension!r} is not allowed: it is not in "
            "policy.allowedSSHExtensions ['permit-pty']",
        )
        for extension in (
            "permit-port-forwarding",
            "permit-agent-forwarding",
            "permit-X11-forwarding",
            "permit-user-rc",
            "no-touch-required",
        )
    ),
    Case(
        "ssh-source-address-and-pty",
        ssh(type="user", principals=["{ns}-a"], criticalOptions={"sourceAddress": ["10.0.0.0/8"]}),
        issued=True,
    ),
    Case("ssh-keyid-space", ssh(type="user", principals=["{ns}-a"], keyId="a b"), rejected=PATTERN),
    Case("ssh-type-root", ssh(type="root", principals=["{ns}-a"]), rejected="Unsupported value"),
    Case(
        "ssh-rsa-1024",
        lambda ns: {
            "ssh": {"type": "user", "principals": [f"{ns}-a"]},
            "privateKey": {"algorithm": "RSA", "size": 1024},
        },
        rejected="RSA keys must be 2048, 3072 or 4096 bits",
    ),
    Case(
        "ssh-principal-root",
        ssh(type="user", principals=["root"]),
        reason="SSHPrincipalNotAllowed",
        message="spec.ssh.principals[0] 'root' is not allowed: it matches none of "
        "policy.allowedSSHPrincipals ['{ns}-*']",
    ),
    Case(
        "ssh-host-wildcard-principal",
        ssh(type="host", principals=["*"]),
        reason="SSHPrincipalNotAllowed",
        message="spec.ssh.principals[0] '*' is not allowed",
    ),
    # -- references ---------------------------------------------------------------------------
    Case(
        "issuerref-namespace-field",
        spec(issuerRef={"name": "foreign-ca", "namespace": "kube-system"}),
        rejected='unknown field "spec.issuerRef.namespace"',
    ),
    Case("issuerref-with-slash", spec(issuerRef={"name": "other/ca"}), rejected=PATTERN),
    Case(
        "issuerref-foreign-group",
        spec(issuerRef={"name": "ca", "group": "cert-manager.io"}),
        rejected="Unsupported value",
    ),
    Case(
        "issuerref-other-namespaces-issuer",
        spec(issuerRef={"name": "foreign-ca"}),
        reason="IssuerNotFound",
        message="Issuer 'foreign-ca' not found in namespace '{ns}'",
    ),
    Case(
        "issuerref-missing-clusterissuer",
        spec(issuerRef={"name": "no-such-clusterissuer", "kind": "ClusterIssuer"}),
        reason="IssuerNotFound",
        message="ClusterIssuer 'no-such-clusterissuer' not found",
    ),
    Case(
        "issuer-with-garbage-ca-chain",
        spec(issuerRef={"name": "garbage"}),
        reason="IssuerNotReady",
        message="CASecretInvalid",
    ),
    Case("secretname-path", spec(secretName="../etc"), rejected=PATTERN),
    Case(
        "secretname-of-other-certificate",
        spec(secretName="canary-identity"),
        reason="SecretInUse",
        message="Secret 'canary-identity' belongs to Certificate 'canary'",
    ),
    Case(
        "secretname-of-unrelated-secret",
        spec(secretName="unrelated"),
        reason="SecretNotManaged",
        message="Secret 'unrelated' exists and was not created by Signet",
    ),
]


def _unrelated_data() -> dict[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"tls.key": pem, "password": os.urandom(24).hex().encode()}


@pytest.fixture(scope="module")
def env(crds: Kube, signet_operator: OperatorProcess, kms_key_factory: KeyFactory) -> Iterator[Env]:
    ns, foreign = f"t-hostile-{uuid.uuid4().hex[:6]}", f"t-foreign-{uuid.uuid4().hex[:6]}"
    for name in (ns, foreign):
        crds.core.create_namespace({"metadata": {"name": name}})
    try:
        key_version = kms_key_factory("EC_SIGN_P256_SHA256")
        crds.apply(issuer_manifest("ca", key_version, namespace=ns))
        crds.apply(issuer_manifest("foreign-ca", key_version, namespace=foreign))
        unrelated = _unrelated_data()
        crds.core.create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "unrelated"},
                "data": {k: base64.b64encode(v).decode() for k, v in unrelated.items()},
            },
        )
        crds.core.create_namespaced_secret(
            ns,
            {
                "metadata": {"name": "garbage-ca"},
                "data": {"ca.crt": base64.b64encode(b"\x00garbage" + os.urandom(512)).decode()},
            },
        )
        crds.apply(
            issuer_manifest(
                "garbage",
                key_version,
                namespace=ns,
                x509={"caSecretRef": {"name": "garbage-ca"}},
            )
        )
        wait_issuer_ready(crds, ns, "ca")
        wait_issuer_ready(crds, foreign, "foreign-ca")
        crds.apply(_manifest(ns, "canary", {"x509": {"dnsNames": [f"canary.{ns}.svc"]}}))
        canary = wait_condition(crds, ns, "canary")
        secret = crds.core.read_namespaced_secret("canary-identity", ns)
        assert signet_operator.process is not None
        yield Env(
            ns,
            foreign,
            canary["status"]["serialNumber"],
            secret.metadata.resource_version,
            unrelated,
            rss_kib(signet_operator.process.pid),
        )
    finally:
        delete_namespace(crds, ns)
        delete_namespace(crds, foreign)


def _manifest(ns: str, name: str, fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"issuerRef": {"name": "ca"}, "secretName": f"{name}-identity"}
    body.update(fields)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {k: v for k, v in body.items() if v is not DROP},
    }


def _exists(kube: Kube, ns: str, name: str) -> bool:
    try:
        get_certificate(kube, ns, name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _canary_untouched(kube: Kube, env: Env) -> None:
    canary = get_certificate(kube, env.namespace, "canary")
    assert condition(canary, "Ready")["status"] == "True"
    assert canary["status"]["serialNumber"] == env.canary_serial
    secret = kube.core.read_namespaced_secret("canary-identity", env.namespace)
    assert secret.metadata.resource_version == env.canary_secret_version


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_certificate(crds: Kube, env: Env, case: Case) -> None:
    ns = env.namespace
    name = f"h-{case.id}"[:60]
    manifest = _manifest(ns, name, case.spec(ns))
    result = crds.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    if case.rejected is not None:
        assert result.returncode != 0, f"accepted: {result.stdout}"
        assert case.rejected in result.stderr, result.stderr[:2000]
        assert not _exists(crds, ns, name)
    else:
        assert result.returncode == 0, result.stderr[:2000]
        if case.issued:
            wait_condition(crds, ns, name, timeout=60)
        else:
            assert case.reason is not None and case.message is not None
            obj = wait_condition(crds, ns, name, status="False", reason=case.reason, timeout=30)
            message = condition(obj, "Ready")["message"]
            assert case.message.replace("{ns}", ns) in message, message
            secrets = secret_snapshot(crds, ns)
            assert f"{name}-identity" not in secrets
    assert secret_snapshot(crds, ns).keys() >= {"canary-identity"}
    unrelated = crds.core.read_namespaced_secret("unrelated", ns)
    assert {k: base64.b64decode(v) for k, v in unrelated.data.items()} == env.unrelated_data
    assert not (unrelated.metadata.labels or {}), "the unrelated Secret was labelled"
    _canary_untouched(crds, env)


def test_operator_bounded_after_hostile_input(
    crds: Kube, env: Env, signet_operator: OperatorProcess, record: Recorder
) -> None:
    """Runs after every case above (same module, defined last)."""
    assert signet_operator.process is not None and signet_operator.process.poll() is None
    _canary_untouched(crds, env)
    growth = rss_kib(signet_operator.process.pid) - env.rss_before_kib
    depth = poll(
        lambda: (metric(signet_operator.metrics(), "signet_workqueue_depth") <= 2) or None,
        timeout=20,
        what="work queue drained",
    )
    assert depth
    assert growth < RSS_GROWTH_LIMIT_KIB, f"operator RSS grew by {growth} KiB"
    refused = [c for c in CASES if c.reason]
    record(
        f"hostile input: {len(CASES)} malformed or abusive Certificates",
        f"{sum(1 for c in CASES if c.rejected)} rejected at apply, {len(refused)} refused "
        f"with a reason, {sum(1 for c in CASES if c.issued)} legal oddities issued; canary "
        "serial unchanged",
        None,
        rss_growth_kib=growth,
    )


def test_unwritable_secret_template_refused_before_signing(
    crds: Kube,
    namespace: str,
    signet_operator: OperatorProcess,
    kms_key_factory: KeyFactory,
    kms_counters: Counters,
    record: Recorder,
) -> None:
    """A secretTemplate label Kubernetes would never accept on a Secret ("bad key!") must be
    refused up front, naming the rule, without a KMS signature: signing first and failing the
    Secret write would spend a signature (and a fresh key) on every retry."""
    key_version = kms_key_factory("EC_SIGN_P256_SHA256", fresh=True)
    crds.apply(issuer_manifest("ca", key_version, namespace=namespace))
    wait_issuer_ready(crds, namespace, "ca")
    base = kms_counters.count("AsymmetricSign", key_version, "OK")
    for template, message in (
        ({"labels": {"bad key!": "x"}}, "label keys must be valid Kubernetes label keys"),
        ({"labels": {"team": "not ok!"}}, "label values must be valid Kubernetes label values"),
        ({"annotations": {"bad key!": "x"}}, "annotation keys must be valid Kubernetes"),
    ):
        manifest = _manifest(
            namespace,
            "bad-template",
            {"x509": {"dnsNames": [f"web.{namespace}.svc"]}, "secretTemplate": template},
        )
        result = crds.apply(manifest, check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    time.sleep(2)
    signs = kms_counters.count("AsymmetricSign", key_version, "OK") - base
    record(
        "secretTemplate keys/values Kubernetes rejects",
        f"rejected at apply (CEL), {signs} KMS signatures",
        None,
    )
    assert signs == 0

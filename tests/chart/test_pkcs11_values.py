"""The chart's pkcs11 values: how an HSM vendor's module and client configuration reach the
operator pod, without leaving the restricted Pod Security profile."""

from __future__ import annotations

from typing import Any

from tests.chart.helm import CHART, container_env, helm, one, render

EXAMPLE: dict[str, Any] = {
    "pkcs11": {
        "volumes": [
            {"name": "hsm-client", "image": {"reference": "registry.example.com/hsm/client:5.4"}},
            {"name": "hsm-config", "configMap": {"name": "hsm-client-config"}},
            {"name": "hsm-pin", "secret": {"secretName": "hsm-pin", "defaultMode": 0o400}},
        ],
        "volumeMounts": [
            {"name": "hsm-client", "mountPath": "/opt/hsm", "readOnly": True},
            {"name": "hsm-config", "mountPath": "/etc/hsm", "readOnly": True},
            {"name": "hsm-pin", "mountPath": "/var/run/secrets/hsm", "readOnly": True},
        ],
        "env": [{"name": "HSM_CLIENT_CONFIG", "value": "/etc/hsm/client.conf"}],
    }
}
"""The example documented in values.yaml."""


def test_the_documented_example_mounts_module_configuration_and_pin() -> None:
    manifests = render(EXAMPLE)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"tmp", "hsm-client", "hsm-config", "hsm-pin"} <= volumes.keys()
    assert volumes["hsm-pin"]["secret"] == {"secretName": "hsm-pin", "defaultMode": 0o400}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["hsm-client"] == {"name": "hsm-client", "mountPath": "/opt/hsm", "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert container_env(manifests)["HSM_CLIENT_CONFIG"] == "/etc/hsm/client.conf"
    # Still the restricted profile: nothing about the pod's privileges changes.
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not any("hostPath" in v for v in pod["volumes"])


def test_the_defaults_add_nothing() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


def test_a_host_path_module_is_refused_by_the_schema() -> None:
    values = {"pkcs11": {"volumes": [{"name": "hsm", "hostPath": {"path": "/usr/lib/hsm"}}]}}
    result = helm("template", "sig", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert "/pkcs11/volumes/0" in result.stderr, result.stderr


def test_a_relative_mount_path_is_refused_by_the_schema() -> None:
    values = {"pkcs11": {"volumeMounts": [{"name": "hsm", "mountPath": "opt/hsm"}]}}
    result = helm("template", "sig", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert "/pkcs11/volumeMounts/0/mountPath" in result.stderr, result.stderr

"""A handle on a development cluster from its kubeconfig: the Python client's two APIs and
the real kubectl. The tests, the benchmarks and the demo all drive a cluster this way; each
adds its own helpers on top (``tests.kube.Kube``, ``bench.kube.Kube``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import kubernetes

from signet_dev.controlplane import ControlPlaneError, tools_bin

CHECKOUT = Path(__file__).resolve().parents[2]
CRD_NAMES = ("certificates.signet.dev", "issuers.signet.dev", "clusterissuers.signet.dev")


class KubectlError(RuntimeError):
    """kubectl failed; the message carries its stderr."""


def kubectl_binary() -> str:
    """The Go-built kubectl (``make tools``: the version the tests pin), else one on PATH."""
    try:
        built = tools_bin() / "kubectl"
    except ControlPlaneError:
        built = CHECKOUT / ".tools" / "bin" / "kubectl"
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        raise KubectlError("kubectl not found: run `make tools`")
    return found


def api_client(kubeconfig: Path, pool: int | None = None) -> kubernetes.client.ApiClient:
    """A client of the cluster ``kubeconfig`` names; ``pool`` connections at most (urllib3's
    default of 4 unless given) for callers that send many requests at once."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    if pool is not None:
        configuration.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(configuration)


class KubeClient:
    """The cluster ``kubeconfig`` names, through the Python client and the real kubectl."""

    failure: ClassVar[type[Exception]] = KubectlError
    """What a failed kubectl raises (tests make it an AssertionError: a test failure that
    polling helpers treat as "not yet")."""

    def __init__(self, kubeconfig: Path, pool: int | None = None) -> None:
        self.kubeconfig = kubeconfig
        # Typed as Any: callers pass raw dict bodies and some read ``_preload_content=False``
        # responses (urllib3), not the generated models the stubs describe.
        self.api: Any = api_client(kubeconfig, pool)
        self.core: Any = kubernetes.client.CoreV1Api(self.api)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.api)

    def close(self) -> None:
        self.api.close()

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig_path: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl; on failure (with ``check``) :attr:`failure` carries its
        stderr."""
        command = [kubectl_binary(), f"--kubeconfig={kubeconfig_path or self.kubeconfig}", *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise self.failure(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(
        self, manifest: dict[str, Any] | str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def apply_crds(self, folder: Path = CHECKOUT / "crds") -> None:
        """Signet's CRDs applied server-side (taking over fields others set) and
        Established, so that custom objects can be created right after."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(folder))
        for name in CRD_NAMES:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")

"""A CertificateController for tests of its pure, watch-side paths: no API call, no
issuer, no KMS is reached on them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from signet.controller.certificates import CertificateController

CERT = ("team-a", "web")
SECRET = ("team-a", "web-tls")


@pytest.fixture
def controller() -> tuple[CertificateController, list[tuple[str, str]]]:
    """The controller, watching Certificate team-a/web (Secret web-tls), and the list of
    Certificates it schedules."""
    scheduled: list[tuple[str, str]] = []
    controller = CertificateController(
        None,  # type: ignore[arg-type]  # no API call is made on these paths
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SimpleNamespace(states={}),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        schedule=lambda ident, delay: scheduled.append(ident),
        namespace_labels=None,  # type: ignore[arg-type]
    )
    body = {
        "metadata": {"namespace": CERT[0], "name": CERT[1], "uid": "u-1", "generation": 1},
        "spec": {"secretName": SECRET[1], "issuerRef": {"name": "ca"}},
    }
    controller.observe_certificate(body, deleted=False)
    scheduled.clear()
    return controller, scheduled

"""/metrics as a scraper reads it: the per-Certificate series written by Signet must parse,
in both formats Prometheus negotiates, to exactly what prometheus_client would have written
for the same families; compression and the ``name[]`` filter behave as the client's own."""

from __future__ import annotations

import datetime
import gzip
import urllib.request
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from signet.observe.certmetrics import READY
from signet.observe.metrics import Metrics

Sample = tuple[str, tuple[tuple[str, str], ...], float]
T = datetime.datetime(2026, 12, 2, 8, 30, 15, 250000, tzinfo=datetime.UTC)


class _Families:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()


def _samples(families: Iterable[Metric]) -> set[Sample]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in families
        for sample in family.samples
        if sample.name.startswith("signet_")
    }


@pytest.fixture(scope="module")
def scraped() -> tuple[Metrics, str]:
    metrics = Metrics()
    metrics.observe_certificate(
        ("ns-a", "web"),
        issuer_name="ca",
        issuer_kind="Issuer",
        ready="True",
        not_before=T,
        not_after=T + datetime.timedelta(hours=24),
        renewal=T + datetime.timedelta(hours=16),
    )
    metrics.observe_certificate(
        ("ns-b", "odd"),
        issuer_name='quote"back\\slash\nline',  # no Kubernetes name has these; escaping must
        issuer_kind="ClusterIssuer",
        ready="False",
        not_before=None,
        not_after=None,
        renewal=None,
    )
    metrics.issuances.labels("success", "Issuing").inc()
    port = metrics.serve(0, "127.0.0.1")
    return metrics, f"http://127.0.0.1:{port}/metrics"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
        return answer.read(), dict(answer.headers)


def test_the_text_format_says_what_the_client_library_would(scraped: tuple[Metrics, str]) -> None:
    metrics, url = scraped
    body, headers = _get(url)
    assert headers["Content-Type"].startswith("text/plain")
    written = _samples(text_string_to_metric_families(body.decode()))
    reference = _samples(
        text_string_to_metric_families(generate_latest(_Families(metrics)).decode())
    )
    assert written == reference
    assert ("signet_certificate_ready_status", (
        ("condition", "False"), ("issuer_kind", "ClusterIssuer"),
        ("issuer_name", 'quote"back\\slash\nline'), ("name", "odd"), ("namespace", "ns-b"),
    ), 1.0) in written  # fmt: skip
    # the Ready lines to the byte, label order included: people grep for them
    ready = {line for line in body.decode().splitlines() if line.startswith(READY)}
    own = generate_latest(_Families(metrics)).decode().splitlines()
    assert ready == {line for line in own if line.startswith(READY)}
    expiry = [s for s in written if s[0] == "signet_certificate_expiration_timestamp_seconds"]
    assert [value for *_, value in expiry] == [(T + datetime.timedelta(hours=24)).timestamp()]


def test_openmetrics_stays_well_formed(scraped: tuple[Metrics, str]) -> None:
    """The parser rejects a sample after ``# EOF`` or a family split in two."""
    _, url = scraped
    body, headers = _get(url, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    families = list(openmetrics_parser.text_string_to_metric_families(body.decode()))
    text = _samples(text_string_to_metric_families(_get(url)[0].decode()))
    assert _samples(families) == text
    assert "signet_certificate_ready_status" in {family.name for family in families}


def test_a_gzip_scrape_is_the_same_text(scraped: tuple[Metrics, str]) -> None:
    _, url = scraped
    packed, headers = _get(url, {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    plain = _samples(text_string_to_metric_families(_get(url)[0].decode()))
    assert _samples(text_string_to_metric_families(gzip.decompress(packed).decode())) == plain


@pytest.mark.parametrize(
    ("names", "present", "absent"),
    [
        (
            ["signet_certificate_ready_status"],
            "signet_certificate_ready_status{",
            "signet_certificate_issuances_total",
        ),
        (
            ["signet_certificate_issuances_total"],
            "signet_certificate_issuances_total{",
            "signet_certificate_ready_status",
        ),
    ],
)
def test_the_name_filter_covers_the_certificate_series(
    scraped: tuple[Metrics, str], names: list[str], present: str, absent: str
) -> None:
    _, url = scraped
    query = "&".join(f"name[]={name}" for name in names)
    body = _get(f"{url}?{query}")[0].decode()
    assert present in body and absent not in body


def test_only_get_is_answered(scraped: tuple[Metrics, str]) -> None:
    _, url = scraped
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""))
    assert refused.value.code == 405

"""The per-Certificate series: cert-manager's four families, from one record per Certificate.

They are most of what a scrape carries (six series per Certificate), so they are kept out
of prometheus_client's registry and written straight into the exposition: the client's
generic writer validates and escapes every label of every sample, which at 100,000
Certificates takes seconds of the operator's GIL per scrape and builds the whole text in
memory. `CertificateSeries.collect` still gives them as client families, for anything that
reads the registry's way (the chart's rule and dashboard checks).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

CertKey = tuple[str, str]

CONDITIONS = ("True", "False", "Unknown")
READY = "signet_certificate_ready_status"
_LABELS = ("namespace", "name", "issuer_name", "issuer_kind")
_TIMESTAMPS = (
    (
        "signet_certificate_expiration_timestamp_seconds",
        "The date after which the certificate expires, as Unix time.",
        "not_after",
    ),
    (
        "signet_certificate_not_before_timestamp_seconds",
        "The date before which the certificate is not valid, as Unix time.",
        "not_before",
    ),
    (
        "signet_certificate_renewal_timestamp_seconds",
        "The time Signet will renew the certificate, as Unix time.",
        "renewal",
    ),
)
_READY_HELP = "The Ready condition of the certificate (1 for the current status)."
_CHUNK = 1000
"""Certificates per piece of the exposition: a scrape never holds the whole text."""


@dataclass(slots=True)
class CertificateRecord:
    """One per Certificate for the operator's life, hence slotted."""

    issuer_name: str
    issuer_kind: str
    ready: str = "Unknown"
    not_before: float | None = None
    not_after: float | None = None
    renewal: float | None = None


def _escape(value: str) -> str:
    """A label value as both text formats quote it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class CertificateSeries:
    def __init__(self, records: dict[CertKey, CertificateRecord]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus_client builds them."""
        ready = GaugeMetricFamily(READY, _READY_HELP, labels=[*_LABELS, "condition"])
        timestamps = [
            (GaugeMetricFamily(name, help_text, labels=_LABELS), attribute)
            for name, help_text, attribute in _TIMESTAMPS
        ]
        for (namespace, name), record in list(self._records.items()):
            values = [namespace, name, record.issuer_name, record.issuer_kind]
            for family, attribute in timestamps:
                value = getattr(record, attribute)
                if value is not None:
                    family.add_metric(values, value)
            for condition in CONDITIONS:
                ready.add_metric([*values, condition], 1.0 if record.ready == condition else 0.0)
        yield from (family for family, _ in timestamps)
        yield ready

    def exposition(self, wanted: Collection[str] | None = None) -> Iterator[str]:
        """The same families as exposition text, in pieces; only those in ``wanted`` if
        given. The sample lines are alike in the Prometheus text format and OpenMetrics
        (the metric and label names need no escaping in either), so one writer serves both.
        """
        records = list(self._records.items())  # the event loop may add one meanwhile
        for name, help_text, attribute in _TIMESTAMPS:
            if wanted is None or name in wanted:
                yield f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
                for start in range(0, len(records), _CHUNK):
                    yield "".join(
                        f"{name}{{{_labels(key, record)}}} {value!r}\n"
                        for key, record in records[start : start + _CHUNK]
                        if (value := getattr(record, attribute)) is not None
                    )
        if wanted is None or READY in wanted:
            yield f"# HELP {READY} {_READY_HELP}\n# TYPE {READY} gauge\n"
            for start in range(0, len(records), _CHUNK):
                yield "".join(
                    f'{READY}{{condition="{condition}",{labels}}} '
                    f"{'1.0' if record.ready == condition else '0.0'}\n"
                    for key, record in records[start : start + _CHUNK]
                    for labels in (_labels(key, record),)
                    for condition in CONDITIONS
                )


def _labels(key: CertKey, record: CertificateRecord) -> str:
    """In name order, as prometheus_client writes them (and people grep for them)."""
    namespace, name = key
    return (
        f'issuer_kind="{_escape(record.issuer_kind)}",issuer_name="{_escape(record.issuer_name)}",'
        f'name="{_escape(name)}",namespace="{_escape(namespace)}"'
    )

"""Reading Prometheus text (the operator's and the apiserver's /metrics): the one parser the
benchmarks and the tests share, so that both read a sample the same way.

Enough of the exposition format for what Signet and the apiserver expose: one sample a
line, ``name{label="value",...} number``; label values hold no escaped quotes.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r'(\w+)="([^"]*)"')


class MetricMissing(AssertionError):
    """No sample of the metric was exposed. An AssertionError so that a test polling a
    metric (``eventually``) reads it as "not yet", and a test asserting on it fails."""


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of every sample of ``name``."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, labels = head.partition("{")
        if metric == name:
            found.append((dict(_LABEL.findall(labels)), float(value)))
    return found


def total(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (0 when none is exposed)."""
    return sum(value for _, value in samples(text, name))


def value(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name``."""
    for labels, sample in samples(text, name):
        if not labels:
            return sample
    raise MetricMissing(f"metric {name} not exposed")

"""The Grafana dashboard shipped with the chart: a well-formed dashboard, rendered as a
sidecar-labelled ConfigMap only when asked for, and naming only metrics Signet exports.

The metric check runs twice: against a fresh ``Metrics().collect()`` (no cluster needed) and
against a scrape of the running operator (which also shows whether process_* metrics exist).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from signet.observe.metrics import Metrics
from tests.chart.helm import ALL_FEATURES, CHART, find, one, render
from tests.operator.harness import OperatorProcess

DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
CONFIGMAP = "sig-signet-grafana-dashboard"

# PromQL words that look like identifiers but are not metric names; aggregation operators
# are among them because `sum by (x) (...)` puts a clause between the name and its `(`.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
# What a family's samples are called, by family type (as the text format names them).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel with queries: top-level ones and those inside (collapsed) rows."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *board["panels"],
        *(inner for p in board["panels"] if p["type"] == "row" for inner in p.get("panels", [])),
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, label matchers ``{...}``, range/subquery brackets ``[...]`` and the label lists
    of ``by``/``without``/``on``/``ignoring``/``group_*`` are removed first; then every
    identifier not called as a function (not followed by ``(``) and not a keyword is a
    metric: ``name{``, ``name[``, ``name)`` and a bare ``name``.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", text, flags=re.IGNORECASE)
    names = set()
    for match in re.finditer(r"(?<![\w$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        name = match.group(1)
        if name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def dashboard_metrics(board: dict[str, Any]) -> dict[str, set[str]]:
    """Metric name -> titles of the panels (and variables) that use it."""
    used: dict[str, set[str]] = {}
    for panel in query_panels(board):
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                used.setdefault(name, set()).add(panel["title"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert inner, f"variable {variable['name']}: unexpected query {text!r}"
            used.setdefault(inner.group(1), set()).add(f"${variable['name']}")
    return used


def sample_names(families: Iterable[Any]) -> set[str]:
    """Every sample name the families can produce, whether or not they have samples yet
    (a labelled family with no children exports only its HELP and TYPE)."""
    names: set[str] = set()
    for family in families:
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


def unknown_metrics(board: dict[str, Any], exported: set[str]) -> dict[str, set[str]]:
    return {
        name: panels for name, panels in dashboard_metrics(board).items() if name not in exported
    }


def registry_names() -> set[str]:
    return sample_names(Metrics().collect())


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["title"] and board["uid"]
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"

    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["type"] == "query"
    assert variables["job"]["datasource"]["uid"] == "${datasource}"

    panels = list(query_panels(board))
    assert len(panels) >= 12
    for panel in panels:
        title = panel["title"]
        assert title, panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title}: no targets"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            expr = target["expr"]
            assert metric_names(expr), f"{title}: no metric in {expr!r}"
            # Every selector is scoped to the chosen job(s).
            selectors = re.findall(r"\{([^}]*)\}", expr)
            assert selectors, f"{title}: {expr!r}"
            assert all('job=~"$job"' in s for s in selectors), f"{title}: {expr!r}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        ("sum without (instance) (b_total) / on (x) group_left (y) c", {"b_total", "c"}),
        ('d{le="0.5"} - time() > bool 3e2', {"d"}),
        ("bottomk(10, e - time()) and f offset 5m", {"e", "f"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_panel_naming_a_metric_signet_lacks_is_caught() -> None:
    board = dashboard()
    panel = next(query_panels(board))
    panel["targets"].append(
        {"refId": "Z", "expr": 'rate(signet_bogus_total{job=~"$job"}[5m])', "datasource": {}}
    )
    assert unknown_metrics(board, registry_names()) == {"signet_bogus_total": {panel["title"]}}


def test_every_dashboard_metric_is_registered_by_signet() -> None:
    exported = registry_names()
    assert "signet_certificate_issuances_total" in exported  # counters get _total
    assert "signet_kms_sign_duration_seconds_bucket" in exported  # histograms get _bucket
    assert unknown_metrics(dashboard(), exported) == {}


@pytest.mark.cluster
def test_every_dashboard_metric_is_exported_by_the_running_operator(
    signet_operator: OperatorProcess,
) -> None:
    scraped = sample_names(text_string_to_metric_families(signet_operator.metrics()))
    # The scrape and a fresh registry agree, so the registry check above is about the
    # real exposition; the scrape is also where process_* metrics would show up.
    # (Signet's registry has no ProcessCollector, so there are none today: the dashboard has
    # no memory panel.)
    assert registry_names() <= scraped
    assert unknown_metrics(dashboard(), scraped) == {}


def test_chart_renders_the_dashboard_only_when_enabled() -> None:
    assert find(render(), "ConfigMap", CONFIGMAP) == []
    assert find(render({"grafanaDashboard": {"enabled": False}}), "ConfigMap", CONFIGMAP) == []

    manifests = render(
        {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "labels": {"team": "pki"},
                "annotations": {"grafana_folder": "Signet"},
            }
        }
    )
    configmap = one(manifests, "ConfigMap", CONFIGMAP)
    metadata = configmap["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["team"] == "pki"
    assert metadata["labels"]["app.kubernetes.io/name"] == "signet"
    assert metadata["annotations"] == {"grafana_folder": "Signet"}
    assert list(configmap["data"]) == ["signet.json"]
    assert json.loads(configmap["data"]["signet.json"]) == dashboard()


def test_dashboard_labels_can_replace_the_sidecar_value_and_namespace_defaults() -> None:
    values = {"grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": "signet"}}}
    configmap = one(render(values, namespace="signet-system"), "ConfigMap", CONFIGMAP)
    assert configmap["metadata"]["namespace"] == "signet-system"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "signet"
    assert "annotations" not in configmap["metadata"]


def test_every_feature_values_include_the_dashboard() -> None:
    values = {**ALL_FEATURES, "watchNamespaces": ["team-a"]}
    configmap = one(render(values), "ConfigMap", CONFIGMAP)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"

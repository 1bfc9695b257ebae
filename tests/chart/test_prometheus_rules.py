"""The alerts shipped with the chart (files/prometheus-rules.yaml, rendered into a
PrometheusRule): promtool checks the rules as helm renders them and runs their unit tests
(prometheus-rules-test.yaml), every alert has a runbook section, and every metric the rules
read is one the operator exports (a fresh ``Metrics().collect()`` and a live scrape).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from signet.observe.metrics import Metrics
from tests.chart.helm import CHART, find, helm, one, render
from tests.kube import ROOT
from tests.operator.harness import OperatorProcess

RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
UNIT_TESTS = Path(__file__).with_name("prometheus-rules-test.yaml")
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ENABLED: dict[str, Any] = {"prometheusRule": {"enabled": True}}
ALERTS = {
    "SignetCertificateNotReady",
    "SignetCertificateRenewalOverdue",
    "SignetIssuanceFailing",
    "SignetKMSErrors",
    "SignetKMSSignSlow",
    "SignetCertificateRequestsDenied",
    "SignetCertificateRequestsWaiting",
    "SignetCertificateRequestsSlow",
    "SignetOperatorDown",
    "SignetNoActiveReplica",
    "SignetSignaturesUndelivered",
    "SignetCARotationStalled",
}
# Metrics that come from Prometheus itself, not from Signet.
NOT_SIGNETS = {"up"}

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def promtool_binary() -> str:
    built = ROOT / ".tools" / "bin" / "promtool"
    if built.exists():
        return str(built)
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not built: run `make tools`")
    return found


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_binary(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rendered_rule(values: dict[str, Any] | None = None) -> dict[str, Any]:
    manifests = render({**ENABLED, **(values or {})})
    rule: dict[str, Any] = one(manifests, "PrometheusRule")
    return rule


def rule_groups(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule file Prometheus gets: the PrometheusRule's spec, as the chart renders it."""
    spec: dict[str, Any] = rendered_rule(values)["spec"]
    return spec


def alerts(groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups["groups"] for rule in group["rules"]}


def write_rules(folder: Path, groups: dict[str, Any]) -> Path:
    path = folder / "signet-rules.yaml"
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, ranges and
    grouping label lists removed, every identifier not called as a function nor a keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", text, flags=re.IGNORECASE)
    pattern = r"(?<![\w$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()"
    return {m for m in re.findall(pattern, text) if m.lower() not in _KEYWORDS}


def rule_metrics(groups: dict[str, Any]) -> dict[str, set[str]]:
    """Metric name -> the alerts reading it."""
    used: dict[str, set[str]] = {}
    for name, rule in alerts(groups).items():
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(name)
    return used


def sample_names(families: Any) -> set[str]:
    """Every sample name the families can produce, with or without samples yet (a labelled
    family with no children exports only its HELP and TYPE)."""
    names: set[str] = set()
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def unknown_metrics(groups: dict[str, Any], exported: set[str]) -> dict[str, set[str]]:
    return {
        name: rules
        for name, rules in rule_metrics(groups).items()
        if name not in exported and name not in NOT_SIGNETS
    }


# -- promtool ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "prometheusRule": {
                "enabled": True,
                "job": "signet-operator",
                "runbookBaseURL": "https://git.example.com/signet/blob/v0.1.0/docs/runbooks.md",
                "thresholds": {
                    "certificateNotReadyFor": "1h30m",
                    "renewalOverdueRemainingFraction": 0.2,
                    "issuanceFailures": 10,
                    "kmsErrorsPerSecond": 1.5,
                    "kmsSignP99Seconds": 0.5,
                    "requestsDenied": 5,
                    "requestP99Seconds": 120,
                    "operatorDownFor": "2m",
                },
            }
        },
    ],
    ids=["defaults", "tuned"],
)
def test_promtool_check_rules_accepts_what_the_chart_renders(
    values: dict[str, Any], tmp_path: Path
) -> None:
    groups = rule_groups(values)
    assert set(alerts(groups)) == ALERTS
    path = write_rules(tmp_path, groups)
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["expr"] = "sum(signet_certificate_ready_status"
    result = promtool("check", "rules", write_rules(tmp_path, groups).name, cwd=tmp_path)
    assert result.returncode != 0, result.stdout


def run_unit_tests(
    folder: Path, tests: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """promtool's unit tests against the rendered rules: the test file as it is, or
    ``tests`` (a changed copy) dumped in its place."""
    write_rules(folder, rule_groups())
    text = UNIT_TESTS.read_text() if tests is None else yaml.safe_dump(tests, sort_keys=False)
    (folder / UNIT_TESTS.name).write_text(text)
    return promtool("test", "rules", UNIT_TESTS.name, cwd=folder)


def unit_tests() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(UNIT_TESTS.read_text())
    return loaded


def test_promtool_unit_tests_fire_each_alert_and_nothing_when_healthy(tmp_path: Path) -> None:
    result = run_unit_tests(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_unit_tests_cover_every_alert_both_ways() -> None:
    tests = unit_tests()
    assert tests["rule_files"] == ["signet-rules.yaml"]
    # Quoted, or a YAML 1.1 reader (PyYAML) takes 0x30 for hexadecimal 48.
    for test in tests["tests"]:
        assert all(isinstance(s["values"], str) for s in test["input_series"]), test["name"]
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == ALERTS, f"never fired: {ALERTS - fired}"
    # Each fired alert's annotations are checked too (promtool then compares them all).
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                assert "runbook_url" in alert["exp_annotations"], (test["name"], case)
    healthy = next(t for t in tests["tests"] if t["name"] == "a healthy operator")
    silent = {case["alertname"] for case in healthy["alert_rule_test"]}
    assert all(not case["exp_alerts"] for case in healthy["alert_rule_test"])
    assert silent == ALERTS


def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    tests = copy.deepcopy(unit_tests())
    healthy = next(t for t in tests["tests"] if t["name"] == "a healthy operator")
    # A healthy operator must not alert; expecting it to is a failing test.
    healthy["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "warning"}}]
    result = run_unit_tests(tmp_path, tests)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


# -- metric names ------------------------------------------------------------------------


def test_metric_names_are_extracted_from_the_rules() -> None:
    expr = (
        'sum((increase(a_total{x="y"}[15m]) > 0) or (a_total unless a_total offset 15m))'
        " >= 3 and histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m]))) > 2.5"
        ' and absent(up{job="signet"} == 1) and (c - time()) < 0.3333 * (c - d)'
    )
    assert metric_names(expr) == {"a_total", "b_bucket", "up", "c", "d"}


def test_a_rule_naming_a_metric_signet_lacks_is_caught() -> None:
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["expr"] = "rate(signet_bogus_total[5m]) > 0"
    exported = sample_names(Metrics().collect())
    first = groups["groups"][0]["rules"][0]["alert"]
    assert unknown_metrics(groups, exported) == {"signet_bogus_total": {first}}


def test_every_rule_metric_is_registered_by_signet() -> None:
    groups = rule_groups()
    exported = sample_names(Metrics().collect())
    assert "signet_certificate_requests_total" in exported
    assert "signet_signatures_undelivered" in exported
    assert len(rule_metrics(groups)) >= 10
    assert unknown_metrics(groups, exported) == {}


@pytest.mark.cluster
def test_every_rule_metric_is_exported_by_the_running_operator(
    signet_operator: OperatorProcess,
) -> None:
    scraped = sample_names(text_string_to_metric_families(signet_operator.metrics()))
    assert sample_names(Metrics().collect()) <= scraped
    assert unknown_metrics(rule_groups(), scraped) == {}


# -- runbooks ----------------------------------------------------------------------------


def test_every_alert_links_its_runbook_section() -> None:
    headings = re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    assert set(headings) >= ALERTS, f"no runbook section: {ALERTS - set(headings)}"
    for name, rule in alerts(rule_groups()).items():
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert annotations["summary"] and annotations["description"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name


def test_runbook_sections_give_meaning_checks_and_fixes() -> None:
    sections = re.split(r"^## ", RUNBOOKS.read_text(), flags=re.MULTILINE)[1:]
    checked = set()
    for section in sections:
        title = section.splitlines()[0].strip()
        if title in ALERTS:
            for part in ("**Meaning.**", "**First checks.**", "**Fixes.**"):
                assert part in section, f"{title}: no {part}"
            checked.add(title)
    assert checked == ALERTS


# -- the chart ---------------------------------------------------------------------------


def test_chart_renders_the_rule_only_when_enabled() -> None:
    assert find(render(), "PrometheusRule") == []
    assert find(render({"prometheusRule": {"enabled": False}}), "PrometheusRule") == []

    rule = rendered_rule(
        {
            "prometheusRule": {
                "enabled": True,
                "namespace": "monitoring",
                "labels": {"release": "prometheus"},
                "runbookBaseURL": "https://git.example.com/signet/docs/runbooks.md",
                "job": "signet-operator",
                "thresholds": {"certificateNotReadyFor": "30m", "kmsSignP99Seconds": 0.75},
            }
        }
    )
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "sig-signet"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "signet"
    rules = alerts(rule["spec"])
    assert rules["SignetCertificateNotReady"]["for"] == "30m"
    assert rules["SignetKMSSignSlow"]["expr"].rstrip().endswith("> 0.75")
    assert rules["SignetOperatorDown"]["expr"] == 'absent(up{job="signet-operator"} == 1)'
    assert rules["SignetKMSErrors"]["annotations"]["runbook_url"] == (
        "https://git.example.com/signet/docs/runbooks.md#signetkmserrors"
    )


def test_defaults_follow_the_release_namespace_and_the_service_monitor_job() -> None:
    rule = rendered_rule()
    assert rule["metadata"]["namespace"] == "signet-system"
    # The chart's ServiceMonitor takes `job` from the Service's app.kubernetes.io/name.
    monitor = one(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    service = one(render(), "Service")
    job = service["metadata"]["labels"]["app.kubernetes.io/name"]
    assert alerts(rule["spec"])["SignetOperatorDown"]["expr"] == f'absent(up{{job="{job}"}} == 1)'
    renamed = rule_groups({"nameOverride": "pki"})
    assert alerts(renamed)["SignetOperatorDown"]["expr"] == 'absent(up{job="pki"} == 1)'


def test_helm_lint_strict_with_the_rule() -> None:
    result = helm("lint", "--strict", str(CHART), values=ENABLED)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"thresholds": {"certificateNotReadyFor": "1.5m"}}, "certificateNotReadyFor"),
        ({"thresholds": {"renewalOverdueRemainingFraction": 1}}, "renewalOverdueRemaining"),
        ({"thresholds": {"issuanceFailures": 0}}, "issuanceFailures"),
        ({"thresholds": {"kmsP99": 1}}, "additional properties 'kmsP99' not allowed"),
        ({"runbookBaseURL": "docs/runbooks.md#x"}, "runbookBaseURL"),
        ({"job": 'a"b'}, "/prometheusRule/job"),
    ],
)
def test_schema_rejects_bad_rule_values(values: dict[str, Any], complaint: str) -> None:
    result = helm(
        "template",
        "sig",
        str(CHART),
        values={"prometheusRule": {"enabled": True, **values}},
        check=False,
    )
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_rules_file_is_what_the_template_includes() -> None:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/prometheus-rules.yaml"' in template
    assert RULES_FILE.exists()

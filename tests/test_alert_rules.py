"""The homelab's alerts fire on the faults they name and stay quiet below their thresholds:
`promtool test rules` (pinned, tools/versions.env PROMTOOL_VERSION) over the rules of the rendered
PrometheusRule and the cases of tests/monitoring/alerts-test.yaml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from mlflow_gitops import tools
from tests.support.manifests import Obj, one

CASES = Path(__file__).parent / "monitoring" / "alerts-test.yaml"
SEEN = Path(__file__).parent / "monitoring" / "mlflow-metrics.txt"


def rules_of(objs: list[Obj]) -> dict:
    return {"groups": one(objs, "PrometheusRule")["spec"]["groups"]}


def annotations_by_alert(rules: dict) -> dict[str, dict[str, str]]:
    return {r["alert"]: r.get("annotations", {}) for g in rules["groups"] for r in g["rules"]}


def promtool_test(tmp_path: Path, rules: dict) -> subprocess.CompletedProcess[str]:
    """Write the rules and the cases (each expected alert with its rule's annotations) side by side."""
    cases = yaml.safe_load(CASES.read_text())
    annotations = annotations_by_alert(rules)
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert.setdefault("exp_annotations", annotations.get(check["alertname"], {}))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "cases.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    promtool = tools.binary("promtool")
    return subprocess.run(
        [promtool, "test", "rules", "cases.yaml"], capture_output=True, text=True, cwd=tmp_path, check=False
    )


def test_the_rules_pass_promtool_check(tmp_path: Path, own_homelab: list[Obj]) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_of(own_homelab)))
    out = subprocess.run(
        [tools.binary("promtool"), "check", "rules", "rules.yaml"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_on_its_fault_and_not_below_its_threshold(
    tmp_path: Path, own_homelab: list[Obj]
) -> None:
    out = promtool_test(tmp_path, rules_of(own_homelab))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_case_that_makes_it_fire(own_homelab: list[Obj]) -> None:
    cases = yaml.safe_load(CASES.read_text())
    fired = {c["alertname"] for t in cases["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert fired == set(annotations_by_alert(rules_of(own_homelab)))


def test_the_cases_use_the_server_metric_names_really_seen() -> None:
    seen = {line for line in SEEN.read_text().splitlines() if line and not line.startswith("#")}
    cases = yaml.safe_load(CASES.read_text())
    names = {s["series"].split("{", 1)[0] for t in cases["tests"] for s in t["input_series"]}
    assert {n for n in names if n.startswith("mlflow_")} <= seen


@pytest.mark.parametrize(
    ("threshold", "value"),
    [
        ("errorRatio", 0.5),
        ("connectionsRatio", 0.95),
        ("artifactVolumeRatio", 0.95),
        ("latencyP95Seconds", 20),
    ],
)
def test_a_higher_threshold_silences_the_alert(tmp_path: Path, threshold: str, value: float) -> None:
    """The cases are not vacuous: raised past the faults' values, the same cases fail."""
    from mlflow_gitops import chart

    extra = tmp_path / "values.yaml"
    extra.write_text(yaml.safe_dump({"monitoring": {"prometheusRule": {threshold: value}}}))
    objs = chart.template_own([chart.VALUES / "homelab.yaml", extra]).documents
    work = tmp_path / "work"
    work.mkdir()
    out = promtool_test(work, rules_of(objs))
    assert out.returncode != 0
    assert "FAILED" in out.stdout + out.stderr

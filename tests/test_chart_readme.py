"""The chart's README.md is what helm-docs makes of README.md.gotmpl and values.yaml, and every value
in its table has a `# --` description."""

from __future__ import annotations

import re

import pytest
import yaml

from mlflow_gitops import chart, chart_readme


@pytest.fixture(scope="module")
def generated() -> str:
    return chart_readme.generate()


def test_chart_readme_is_not_stale(generated: str) -> None:
    committed = chart_readme.README.read_text() if chart_readme.README.exists() else ""
    assert committed == generated, (
        "charts/mlflow-stack/README.md differs from what helm-docs makes of values.yaml and "
        "README.md.gotmpl: run `make chart-readme` and commit it"
    )


def test_every_value_in_the_chart_readme_has_a_description(generated: str) -> None:
    """helm-docs leaves the description cell empty for a value without a `# --` comment."""
    values_table = generated.partition("| Key | Type | Default | Description |")[2]
    assert values_table, "the generated README has no values table"
    undocumented = [row.split("|")[1].strip() for row in values_table.splitlines() if row.endswith("|  |")]
    assert undocumented == [], "values.yaml: add a `# -- <description>` comment above each of these"


def test_chart_readme_names_no_version(generated: str) -> None:
    """A bump (the upstream chart, appVersion, an image in values.yaml) must not make the file stale:
    versioned defaults carry an `# @default --` text instead."""
    kube_version = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["kubeVersion"]
    versions = re.findall(r"\d+\.\d+\.\d+", generated.replace(kube_version, ""))
    assert versions == [], "charts/mlflow-stack/README.md would change with every bump of these"


def test_values_file_names_its_schema_for_editors() -> None:
    """The yaml-language-server modeline: editors validate and complete values.yaml against the schema."""
    first = (chart.CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"
    assert (chart.CHART / "values.schema.json").is_file()

"""Every rendered object validates strictly against the vendored schemas at the target version."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.validate import kubeconform


@pytest.mark.parametrize("path", sorted(chart.RENDERED.glob("*.yaml")), ids=lambda p: p.name)
def test_committed_render_validates(path: Path) -> None:
    assert kubeconform([path]) == ""


def test_own_templates_validate(tmp_path: Path) -> None:
    out = tmp_path / "own.yaml"
    out.write_text(chart.template_own([chart.VALUES / "homelab.yaml"]).text)
    assert kubeconform([out]) == ""


def test_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    docs = chart.template_own([chart.VALUES / "homelab.yaml"]).documents
    cluster = next(d for d in docs if d["kind"] == "Cluster")
    cluster["spec"]["instancess"] = 1
    out = tmp_path / "typo.yaml"
    out.write_text(yaml.safe_dump(cluster))
    assert "instancess" in kubeconform([out])


def test_validation_rejects_a_kind_without_schema(tmp_path: Path) -> None:
    out = tmp_path / "unknown.yaml"
    out.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
    assert "could not find schema" in kubeconform([out])

"""The pinned toolchain: one target Kubernetes version, tools that report their pins."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlflow_gitops import chart, tools, versions


@pytest.mark.parametrize("tool", tools.TOOLS, ids=lambda t: t.name)
def test_installed_tool_reports_its_pin(tool: tools.Tool) -> None:
    assert tools.matches(str(chart.BIN / tool.name), tool)


def test_helm_targets_the_pinned_kubernetes_version_by_default(tmp_path: Path) -> None:
    """Built with the version ldflags, helm assumes the pinned cluster version, not 1.20."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.1\n")
    (tmp_path / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    out = subprocess.run(
        [chart.helm(), "template", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert f'kube: "v{versions.KUBE_VERSION}"' in out.stdout


def test_schemas_are_for_the_pinned_kubernetes_version() -> None:
    assert (chart.ROOT / "schemas" / f"v{versions.KUBE_VERSION}-standalone-strict").is_dir()


def test_versions_file_rejects_a_malformed_line(tmp_path: Path) -> None:
    bad = tmp_path / "versions.env"
    bad.write_text("HELM_VERSION v3\n")
    with pytest.raises(ValueError, match="expected KEY=value"):
        versions.load(bad)

"""Chart.lock pins the upstream chart and stays in step with Chart.yaml."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlflow_gitops import chart
from mlflow_gitops import chart_lock


def test_chart_lock_matches_chart_yaml() -> None:
    assert (chart.CHART / "Chart.lock").read_text() == chart_lock.render(chart.CHART)


def test_upstream_chart_is_pinned_to_1_11_5() -> None:
    import yaml

    lock = yaml.safe_load((chart.CHART / "Chart.lock").read_text())
    assert lock["dependencies"] == [
        {"name": "mlflow", "repository": "https://community-charts.github.io/helm-charts", "version": "1.11.5"}
    ]


def helm_dependency_build(chart_dir: Path, home: Path) -> str:
    """Run `helm dependency build` with the repository declared but no index cached: helm checks
    the lock's digest first, then fails looking for the index, without reaching the network."""
    repos = home / "repositories.yaml"
    repos.write_text(
        "apiVersion: v1\nrepositories:\n- name: community-charts\n"
        "  url: https://community-charts.github.io/helm-charts\n"
    )
    env = {**os.environ, "HELM_REPOSITORY_CONFIG": str(repos), "HELM_REPOSITORY_CACHE": str(home / "cache")}
    cmd = [chart.helm(), "dependency", "build", "--skip-refresh", str(chart_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False).stderr


def test_helm_accepts_the_lock_digest(tmp_path: Path) -> None:
    copy = chart.own_chart_copy(tmp_path / "chart")
    for name in ("Chart.yaml", "Chart.lock"):
        (copy / name).write_bytes((chart.CHART / name).read_bytes())
    err = helm_dependency_build(copy, tmp_path)
    assert "out of sync" not in err
    assert "community-charts-index.yaml" in err


def test_helm_rejects_a_stale_lock(tmp_path: Path) -> None:
    copy = chart.own_chart_copy(tmp_path / "chart")
    (copy / "Chart.yaml").write_bytes((chart.CHART / "Chart.yaml").read_bytes().replace(b"1.11.5", b"1.11.4"))
    (copy / "Chart.lock").write_bytes((chart.CHART / "Chart.lock").read_bytes())
    assert "out of sync" in helm_dependency_build(copy, tmp_path)

"""Chart.lock pins the upstream chart and stays in step with Chart.yaml."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from mlflow_gitops import chart, chart_lock
from tests.support.bump import bump_patch


def test_chart_lock_matches_chart_yaml() -> None:
    assert (chart.CHART / "Chart.lock").read_text() == chart_lock.render(chart.CHART)


def upstream_pin() -> dict[str, str]:
    """The community mlflow chart as Chart.yaml declares it: the one place its version lives."""
    (dep,) = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["dependencies"]
    return {k: str(dep[k]) for k in ("name", "repository", "version")}


def test_lock_pins_the_community_chart_at_an_exact_version() -> None:
    pin = upstream_pin()
    assert pin["name"] == "mlflow"
    assert pin["repository"] == "https://community-charts.github.io/helm-charts"
    assert chart_lock.EXACT_VERSION.match(pin["version"]), pin
    lock = yaml.safe_load((chart.CHART / "Chart.lock").read_text())
    assert lock["dependencies"] == [pin]


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
    (copy / "Chart.yaml").write_text(
        bump_patch((chart.CHART / "Chart.yaml").read_text(), upstream_pin()["version"])
    )
    (copy / "Chart.lock").write_bytes((chart.CHART / "Chart.lock").read_bytes())
    assert "out of sync" in helm_dependency_build(copy, tmp_path)

"""`make lint`'s checks (ruff, yamllint, helm lint --strict with each environment), one test each,
and chart-testing's lint; all offline."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

import pytest

from mlflow_gitops import chart, lint
from mlflow_gitops.versions import KUBE_VERSION, PINS, ROOT

# ct calls helm, yamllint and yamale by name: the pinned ones come first.
TOOL_PATH = os.pathsep.join([str(ROOT / "bin"), str(ROOT / ".venv" / "bin"), os.environ.get("PATH", "")])


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": TOOL_PATH}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, check=False)


def helm_lint(chart_dir: Path) -> subprocess.CompletedProcess[str]:
    values = str(chart.VALUES / "homelab.yaml")
    return run(
        [chart.helm(), "lint", "--strict", "--kube-version", KUBE_VERSION, "-f", values, str(chart_dir)]
    )


@cache
def ct_config_dir() -> Path:
    """chart-testing's schema and lint config ship in its Go module (downloaded with `make tools`)."""
    out = run(["go", "mod", "download", "-json", f"github.com/helm/chart-testing/v3@{PINS['CT_VERSION']}"])
    assert out.returncode == 0, out.stderr
    return Path(json.loads(out.stdout)["Dir"]) / "etc"


def ct_lint(chart_dir: Path) -> subprocess.CompletedProcess[str]:
    etc = ct_config_dir()
    values = str(chart.VALUES / "homelab.yaml")
    return run(
        [
            str(chart.BIN / "ct"),
            "lint",
            "--charts",
            str(chart_dir),
            "--chart-yaml-schema",
            str(etc / "chart_schema.yaml"),
            "--lint-conf",
            str(etc / "lintconf.yaml"),
            "--validate-maintainers=false",
            "--skip-helm-dependencies",
            "--check-version-increment=false",
            "--helm-lint-extra-args",
            f"--strict --kube-version {KUBE_VERSION} -f {values}",
        ],
        cwd=chart_dir.parent,
    )


LINT_CHECKS = [
    pytest.param(check, id=check.name, marks=[pytest.mark.upstream] if check.needs_upstream else [])
    for check in lint.checks()
]


@pytest.mark.parametrize("check", LINT_CHECKS)
def test_make_lint_check_passes(check: lint.Check) -> None:
    """The checks `make lint` runs, with the same commands: ruff, yamllint, helm lint per environment."""
    out = check.run()
    assert out.returncode == 0, f"{' '.join(check.argv)}\n{out.stdout}{out.stderr}"


def test_helm_lint_strict_passes_on_own_templates(tmp_path: Path) -> None:
    out = helm_lint(chart.own_chart_copy(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.upstream
def test_chart_testing_lint_passes() -> None:
    out = ct_lint(chart.CHART)
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_testing_lint_passes_on_own_templates(tmp_path: Path) -> None:
    out = ct_lint(chart.own_chart_copy(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr

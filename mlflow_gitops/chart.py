"""Render the chart with the real helm binary: the one place that knows how helm is invoked."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlflow_gitops import tools
from mlflow_gitops.versions import KUBE_VERSION, ROOT

CHART = ROOT / "charts" / "mlflow-stack"
VALUES = ROOT / "values"
RENDERED = ROOT / "rendered"
BIN = ROOT / "bin"
RELEASE = "mlflow"
NAMESPACE = "mlflow"
UPSTREAM = "mlflow"
# APIs the target cluster serves beyond the core ones, which templates test with
# `.Capabilities.APIVersions.Has` (the Prometheus Operator: the upstream ServiceMonitor, this chart's
# PodMonitor and PrometheusRule). Argo CD and Flux render with the cluster's own list instead.
API_VERSIONS = ("monitoring.coreos.com/v1",)


class RenderError(Exception):
    """helm refused to render; the message is helm's own."""


def helm() -> str:
    return tools.binary("helm")


def upstream_present(chart: Path = CHART) -> bool:
    """True when the mlflow dependency is in charts/ (as a directory or a packaged .tgz)."""
    charts = chart / "charts"
    return (charts / UPSTREAM / "Chart.yaml").exists() or any(charts.glob(f"{UPSTREAM}-*.tgz"))


@dataclass(frozen=True)
class Render:
    text: str

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.text) if d]


def template(
    values_files: list[Path],
    *,
    set_values: list[str] | None = None,
    chart: Path = CHART,
    extra_args: list[str] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Render:
    """`helm template` the chart; raise RenderError with helm's message on failure.

    The Kubernetes version is always passed: the renders must not depend on the version helm
    assumes by default (Helm 4 derives it from the client-go it was built with)."""
    cmd = [
        helm(),
        "template",
        release,
        str(chart),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for api_version in API_VERSIONS:
        cmd += ["--api-versions", api_version]
    for path in values_files:
        cmd += ["--values", str(path)]
    for item in set_values or []:
        cmd += ["--set", item]
    cmd += extra_args or []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RenderError(out.stderr.strip())
    return Render(out.stdout)


def own_chart_copy(workdir: Path) -> Path:
    """A copy of the chart without the upstream dependency: renders this chart's templates alone."""
    copy = workdir / CHART.name
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    meta.pop("dependencies", None)
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return copy


def template_own(values_files: list[Path], *, set_values: list[str] | None = None) -> Render:
    with tempfile.TemporaryDirectory() as work:
        return template(values_files, set_values=set_values, chart=own_chart_copy(Path(work)))

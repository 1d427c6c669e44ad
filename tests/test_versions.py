"""The MLflow version is one number: the chart's appVersion. The server image of every render, the
helm test image and the image's server in requirements-e2e.txt follow it, so a bump that moves one
without the others fails here, naming the file to align."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.manifests import images
from tests.support.versions import app_version, pins

MLFLOW_IMAGE = "burakince/mlflow"


def test_the_image_server_in_requirements_is_the_app_version() -> None:
    assert pins().get("mlflow") == app_version(), (
        "requirements-e2e.txt's mlflow must be Chart.yaml's appVersion (and its other pins the image's lock)"
    )


def test_every_mlflow_image_of_every_render_runs_the_app_version(
    committed_renders: dict[str, list[dict[str, Any]]],
) -> None:
    for env, documents in committed_renders.items():
        tags = {ref.rsplit(":", 1)[1] for ref in images(documents) if ref.rsplit(":", 1)[0] == MLFLOW_IMAGE}
        assert tags == {app_version()}, (
            f"rendered/{env}.yaml runs {MLFLOW_IMAGE} {sorted(tags)}, Chart.yaml's appVersion is {app_version()}: "
            "bump appVersion with the upstream chart, then `make render`"
        )


def test_helm_test_image_follows_the_app_version_unless_pinned(own_homelab: list[dict[str, Any]]) -> None:
    (pod,) = [d for d in own_homelab if d["kind"] == "Pod"]
    assert images([pod]) == [f"{MLFLOW_IMAGE}:{app_version()}"]
    pinned = chart.template_own([], set_values=["helmTest.image.tag=9.9.9"]).documents
    assert images([d for d in pinned if d["kind"] == "Pod"]) == [f"{MLFLOW_IMAGE}:9.9.9"]


@pytest.mark.upstream
def test_app_version_is_the_one_the_pinned_upstream_chart_deploys() -> None:
    upstream = yaml.safe_load((chart.CHART / "charts" / "mlflow" / "Chart.yaml").read_text())
    (dep,) = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["dependencies"]
    assert str(upstream["version"]) == str(dep["version"]), (
        "charts/mlflow-stack/charts/ is not the pinned chart"
    )
    assert str(upstream["appVersion"]) == app_version(), (
        f"the upstream chart {dep['version']} deploys MLflow {upstream['appVersion']}; "
        f"set appVersion in charts/mlflow-stack/Chart.yaml to it"
    )

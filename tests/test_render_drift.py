"""rendered/<env>.yaml is what GitOps applies: it must be current, complete and reproducible."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mlflow_gitops import chart, render
from tests.support.manifests import Obj

OWN_SOURCE = "# Source: mlflow-stack/templates/"


def environments() -> list[str]:
    return render.environments()


def own_documents(text: str) -> list[Obj]:
    """The objects of this chart's own templates, identified by helm's `# Source:` comment."""
    docs = [d + "\n" for d in text.split("\n---\n")]
    return [yaml.safe_load(d) for d in docs if OWN_SOURCE in d and yaml.safe_load(d)]


@pytest.mark.parametrize("env", environments())
def test_committed_render_has_current_own_objects(env: str) -> None:
    committed = own_documents((chart.RENDERED / f"{env}.yaml").read_text())
    fresh = chart.template_own([chart.VALUES / f"{env}.yaml"]).documents
    assert committed == fresh, f"rendered/{env}.yaml is stale: run `make render ENV={env}`"


@pytest.mark.upstream
@pytest.mark.parametrize("env", environments())
def test_committed_render_equals_a_fresh_render(env: str, tmp_path: Path) -> None:
    fresh = render.render(env, out_dir=tmp_path)
    committed = chart.RENDERED / f"{env}.yaml"
    assert fresh.read_text() == committed.read_text(), f"run `make render ENV={env}` and commit it"


@pytest.mark.upstream
def test_two_renders_are_byte_identical() -> None:
    values = [chart.VALUES / "homelab.yaml"]
    assert chart.template(values).text == chart.template(values).text


def test_own_templates_render_byte_identical_twice() -> None:
    values = [chart.VALUES / "homelab.yaml"]
    assert chart.template_own(values).text == chart.template_own(values).text


def test_every_environment_has_a_committed_render() -> None:
    committed = sorted(p.stem for p in chart.RENDERED.glob("*.yaml"))
    assert committed == environments()


def test_render_without_upstream_stops_before_writing(tmp_path: Path) -> None:
    bare = chart.own_chart_copy(tmp_path / "chart")
    shutil.copy2(chart.CHART / "Chart.yaml", bare / "Chart.yaml")  # declares the dependency again
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"make deps MLFLOW_CHART="):
        render.render("homelab", chart=bare, out_dir=out)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.upstream
def test_failed_render_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = tmp_path / "values"
    values.mkdir()
    (values / "broken.yaml").write_text("postgres:\n  instances: 0\n")
    monkeypatch.setattr(render, "VALUES", values)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit, match=r"/postgres/instances"):
        render.render("broken", out_dir=out)
    assert list(out.iterdir()) == []

"""`make render-check` (mlflow_gitops/render_check.py): CI's check that rendered/ is the render of values/.

The comparison is tested with a stand-in for helm (render.render writes a given text), so these run
offline; tests/test_render_drift.py compares the real renders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_gitops import render, render_check

FRESH = {"homelab": "kind: ConfigMap\nname: a\n", "lab-minimal": "kind: ConfigMap\nname: b\n"}


@pytest.fixture
def committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A rendered/ directory holding exactly the fresh renders, with helm replaced by FRESH."""

    def fake_render(env: str, *, out_dir: Path) -> Path:
        target = out_dir / f"{env}.yaml"
        target.write_text(FRESH[env])
        return target

    monkeypatch.setattr(render, "environments", lambda: sorted(FRESH))
    monkeypatch.setattr(render, "render", fake_render)
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for env, text in FRESH.items():
        (rendered / f"{env}.yaml").write_text(text)
    return rendered


def test_current_renders_pass(committed: Path) -> None:
    assert render_check.differences(committed) == []


def test_a_stale_render_is_shown_as_a_diff_naming_the_environment(committed: Path) -> None:
    (committed / "lab-minimal.yaml").write_text("kind: ConfigMap\nname: old\n")
    (problem,) = render_check.differences(committed)
    assert problem.startswith("rendered/lab-minimal.yaml is stale")
    assert "-name: old" in problem and "+name: b" in problem


def test_a_missing_and_an_orphaned_render_are_named(committed: Path) -> None:
    (committed / "homelab.yaml").unlink()
    (committed / "retired.yaml").write_text("kind: ConfigMap\n")
    assert render_check.differences(committed) == [
        "rendered/homelab.yaml is missing (values/homelab.yaml has no committed render)",
        "rendered/retired.yaml has no values/retired.yaml: delete it or add the values",
    ]


def test_the_check_fails_with_the_fix(
    committed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (committed / "homelab.yaml").write_text("")
    monkeypatch.setattr(render_check, "RENDERED", committed)
    assert render_check.main() == 1
    assert "run `make deps render-all` and commit rendered/" in capsys.readouterr().out


def test_the_work_tree_is_never_written(committed: Path) -> None:
    (committed / "homelab.yaml").write_text("stale\n")
    render_check.differences(committed)
    assert (committed / "homelab.yaml").read_text() == "stale\n"

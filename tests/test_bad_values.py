"""Each file in tests/bad-values/ breaks one value of values/homelab.yaml; the render must stop
with a message that names the value. The first line of each file holds the expected message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlflow_gitops import chart
from tests.support.schema_paths import constrained_paths

CASES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))


def header(path: Path, field: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {field}: "):
            return line.removeprefix(f"# {field}: ")
    return None


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_bad_value_fails_naming_the_value(case: Path) -> None:
    expected = header(case, "error")
    assert expected, f"{case.name} has no '# error: <message>' line"
    values = [chart.VALUES / "homelab.yaml", case]
    needs_upstream = header(case, "needs") == "upstream"
    if needs_upstream and not chart.upstream_present():
        pytest.skip("needs the upstream mlflow chart (its values schema): run `make deps`")
    with pytest.raises(chart.RenderError) as failure:
        chart.template(values) if needs_upstream else chart.template_own(values)
    assert expected in str(failure.value)


def test_homelab_values_alone_render() -> None:
    """The cases fail because of their one change, not because the base is broken."""
    assert chart.template_own([chart.VALUES / "homelab.yaml"]).documents


def test_every_constrained_value_has_a_failing_case() -> None:
    """Each value values.schema.json constrains (pattern, enum, bounds) is broken by some case."""
    named = {m.group(1) for case in CASES if (m := re.match(r"'(/[^']*)'", header(case, "error") or ""))}
    paths = constrained_paths(chart.CHART / "values.schema.json", skip={"/mlflow"})
    uncovered = [p for p in paths if not any(n == p or n.startswith(f"{p}/") for n in named)]
    assert uncovered == []

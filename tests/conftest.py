"""Renders shared by the tests: helm runs once per session and values file."""

from __future__ import annotations

import os

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.render import how_to_provide
from tests.support.manifests import Obj

UPSTREAM_MISSING = f"needs the upstream chart, and {how_to_provide()}"
HOMELAB = chart.VALUES / "homelab.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if chart.upstream_present():
        return
    if os.environ.get("REQUIRE_UPSTREAM") == "1":
        raise pytest.UsageError(f"REQUIRE_UPSTREAM=1 but the chart is absent: {UPSTREAM_MISSING}")
    skip = pytest.mark.skip(reason=UPSTREAM_MISSING)
    for item in items:
        if "upstream" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def committed_homelab() -> list[Obj]:
    """rendered/homelab.yaml as committed: what Argo CD syncs as plain manifests."""
    return [d for d in yaml.safe_load_all((chart.RENDERED / "homelab.yaml").read_text()) if d]


@pytest.fixture(scope="session")
def homelab(committed_homelab: list[Obj]) -> list[Obj]:
    """The homelab render the fact tests read.

    A fresh full render when the upstream chart is present; otherwise the committed render, which
    tests/test_render_drift.py proves current (own templates always, the whole file with upstream).
    """
    if chart.upstream_present():
        return chart.template([HOMELAB]).documents
    return committed_homelab


@pytest.fixture(scope="session")
def own_homelab() -> list[Obj]:
    """This chart's own templates alone, rendered with the homelab values (no upstream needed)."""
    return chart.template_own([HOMELAB]).documents


@pytest.fixture(scope="session")
def committed_renders() -> dict[str, list[Obj]]:
    """Every committed rendered/<env>.yaml, by environment."""
    return {
        p.stem: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(chart.RENDERED.glob("*.yaml"))
    }

"""The node's add-ons (mlflow_gitops/node/addons.py) follow their pins: each module of tools/node/
requires its module at the pin of tools/versions.env, builds it as a tool, and the pin carries a
Renovate comment; `make node-build` builds them and the node refuses to start without them."""

from __future__ import annotations

import re

import pytest

from mlflow_gitops.node import addons, build, gobuild
from mlflow_gitops.versions import ROOT


@pytest.mark.parametrize("tool", addons.ADDONS, ids=lambda t: t.name)
def test_addon_module_requires_its_pin_and_builds_it_as_a_tool(tool: addons.ToolModule) -> None:
    gomod = (tool.directory / "go.mod").read_text()
    assert tool.required() == tool.version, (
        f"{tool.directory.relative_to(ROOT)}/go.mod requires {tool.module} {tool.required()}, "
        f"{tool.pin_key} is {tool.version}"
    )
    assert re.search(rf"^tool {re.escape(tool.package)}$", gomod, re.MULTILINE), gomod[:400]
    assert (tool.directory / "go.sum").exists()


@pytest.mark.parametrize("tool", addons.ADDONS, ids=lambda t: t.name)
def test_addon_pin_has_a_renovate_comment_naming_its_module(tool: addons.ToolModule) -> None:
    lines = (ROOT / "tools" / "versions.env").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{tool.pin_key}="))
    assert lines[index - 1] == f"# renovate: datasource=go depName={tool.module}", tool.pin_key
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tool.version), tool.version


def test_kube_router_is_built_by_node_build_and_required_to_start_and_flux_only_by_node_flux(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(addons.NAMES) <= set(build.names())
    assert addons.FLUX == ("source-controller", "kustomize-controller", "helm-controller")
    assert addons.APART == (*addons.FLUX, "external-secrets")
    assert "kube-router" in build.defaults() and not set(addons.APART) & set(build.defaults())
    monkeypatch.setattr(gobuild, "module_version", lambda path, module: None)
    for tool in addons.ADDONS:
        needed = f"bin/{tool.name} {tool.version}"
        assert (needed in build.missing()) is (tool.name not in addons.APART), needed
        assert (needed in addons.missing(addons.FLUX)) is (tool.name in addons.FLUX), needed


def test_node_flux_asks_for_the_controllers_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    monkeypatch.setattr(addons, "main", lambda wanted: built.extend(sorted(wanted)))
    monkeypatch.setattr(build.install_postgres, "main", lambda packages: pytest.fail("no Debian step"))
    assert build.main(["--flux"]) == 0
    assert built == sorted(addons.FLUX)
    built.clear()
    assert build.main(["--external-secrets"]) == 0
    assert built == ["external-secrets"]


def test_addon_module_at_another_version_than_the_pin_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tool = addons.ADDONS[0]
    monkeypatch.setattr(addons.ToolModule, "required", lambda self: "v0.0.1")
    with pytest.raises(SystemExit, match=rf"requires {re.escape(tool.module)} v0\.0\.1, {tool.pin_key} is"):
        addons.check_module(tool)

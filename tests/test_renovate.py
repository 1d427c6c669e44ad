"""renovate.json: valid, and its managers find every pin they are meant to bump."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from mlflow_gitops import versions
from mlflow_gitops.versions import ROOT

RENOVATE = ROOT / "renovate.json"
COMMENT = "# renovate:"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RENOVATE.read_text())
    return loaded


def python_regex(pattern: str) -> re.Pattern[str]:
    """Renovate's JavaScript regex as Python's: only named groups are spelt differently."""
    return re.compile(pattern.replace("(?<", "(?P<"))


def custom_manager(file: str) -> dict[str, Any]:
    """The custom manager whose managerFilePatterns match a path of the repository."""
    managers: list[dict[str, Any]] = config()["customManagers"]
    for manager in managers:
        if any(python_regex(p.strip("/")).search(file) for p in manager["managerFilePatterns"]):
            return manager
    raise AssertionError(f"no custom manager reads {file}")


def test_renovate_config_is_valid_json_with_the_managers_it_relies_on() -> None:
    loaded = config()
    assert set(loaded["enabledManagers"]) == {"helmv3", "pip_requirements", "custom.regex"}
    assert all(m["customType"] == "regex" for m in loaded["customManagers"])


def test_every_renovate_comment_in_versions_env_is_followed_by_a_pin() -> None:
    lines = versions.VERSIONS_FILE.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.startswith(COMMENT):
            following = lines[number] if number < len(lines) else ""
            key, sep, value = following.partition("=")
            assert sep and key.isidentifier() and value, f"versions.env:{number}: {line!r} is not followed by KEY=value"


def test_versions_env_manager_extracts_every_annotated_pin() -> None:
    text = versions.VERSIONS_FILE.read_text()
    (pattern,) = custom_manager("tools/versions.env")["matchStrings"]
    found = {m["currentValue"] for m in python_regex(pattern).finditer(text)}
    annotated = text.count(f"\n{COMMENT}")
    assert len(list(python_regex(pattern).finditer(text))) == annotated
    assert found <= set(versions.PINS.values())


def test_app_version_manager_reads_the_chart_app_version() -> None:
    path = ROOT / "charts" / "mlflow-stack" / "Chart.yaml"
    manager = custom_manager("charts/mlflow-stack/Chart.yaml")
    (pattern,) = manager["matchStrings"]
    match = python_regex(pattern).search(path.read_text())
    assert match is not None, "the appVersion line is not where the manager looks"
    assert match["currentValue"] == str(yaml.safe_load(path.read_text())["appVersion"])
    assert (manager["datasourceTemplate"], manager["depNameTemplate"]) == ("docker", "burakince/mlflow")


def test_helm_manager_reads_the_chart_and_not_its_vendored_dependency() -> None:
    (pattern,) = config()["helmv3"]["managerFilePatterns"]
    regex = python_regex(pattern.strip("/"))
    assert regex.search("charts/mlflow-stack/Chart.yaml")
    assert not regex.search("charts/mlflow-stack/charts/mlflow/Chart.yaml")


def test_pip_manager_reads_every_requirements_file() -> None:
    (pattern,) = config()["pip_requirements"]["managerFilePatterns"]
    regex = python_regex(pattern.strip("/"))
    files = sorted(p.name for p in ROOT.glob("requirements*.txt"))
    assert files and all(regex.search(name) for name in files)

"""renovate.json: valid, and its managers find every pin they are meant to bump."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from mlflow_gitops import versions
from mlflow_gitops.versions import ROOT
from tests.support.manifests import images

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
    assert set(loaded["enabledManagers"]) == {"helmv3", "pip_requirements", "custom.regex", "github-actions"}
    assert all(m["customType"] == "regex" for m in loaded["customManagers"])


def test_every_renovate_comment_in_versions_env_is_followed_by_a_pin() -> None:
    lines = versions.VERSIONS_FILE.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.startswith(COMMENT):
            following = lines[number] if number < len(lines) else ""
            key, sep, value = following.partition("=")
            assert sep and key.isidentifier() and value, (
                f"versions.env:{number}: {line!r} is not followed by KEY=value"
            )


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


def custom_managers_reading(path: str) -> list[dict[str, Any]]:
    managers: list[dict[str, Any]] = config()["customManagers"]
    return [
        m for m in managers if any(python_regex(p.strip("/")).search(path) for p in m["managerFilePatterns"])
    ]


def pins_found(path: str) -> set[tuple[str, str]]:
    """(depName, currentValue) of every pin Renovate's regex managers extract from a file."""
    text = (ROOT / path).read_text()
    found: set[tuple[str, str]] = set()
    for manager in custom_managers_reading(path):
        for pattern in manager["matchStrings"]:
            for m in python_regex(pattern).finditer(text):
                groups = m.groupdict()
                found.add(
                    (groups.get("depName") or manager.get("depNameTemplate", ""), groups["currentValue"])
                )
    return found


def test_every_image_of_every_render_is_bumped_by_a_rule(committed_renders: dict[str, list[Any]]) -> None:
    """An image is covered when a regex manager finds its exact name:tag in the chart's or an
    environment's values, or when it is the MLflow image at the chart's appVersion (that manager's)."""
    found = pins_found("charts/mlflow-stack/Chart.yaml")
    for path in [
        "charts/mlflow-stack/values.yaml",
        *(f"values/{p.name}" for p in (ROOT / "values").glob("*.yaml")),
    ]:
        found |= pins_found(path)
    for env, documents in committed_renders.items():
        for ref in images(documents):
            name, _, tag = ref.rpartition(":")
            assert (name, tag) in found, (
                f"rendered/{env}.yaml: image {ref} is pinned where no Renovate rule reads it"
            )


def test_image_lock_pins_are_never_bumped_alone() -> None:
    """requirements-e2e.txt pins the MLflow image's own lock: only mlflow moves, with its group."""
    names = re.findall(
        r"^([A-Za-z0-9_.-]+)==", (ROOT / "requirements-e2e.txt").read_text(), flags=re.MULTILINE
    )
    rules = config()["packageRules"]
    (disabled,) = [r for r in rules if r.get("matchFileNames") == ["requirements-e2e.txt"]]
    assert disabled["enabled"] is False and disabled["matchPackageNames"] == ["!mlflow"]
    assert "mlflow" in names and len(names) > 1
    (group,) = [r for r in rules if r.get("groupName") == "mlflow"]
    assert {"mlflow", "burakince/mlflow"} <= set(group["matchPackageNames"])

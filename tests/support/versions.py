"""The MLflow versions the tests compare, read from where they are pinned: the chart's appVersion
(Chart.yaml), the image's server (requirements-e2e.txt) and the minor before it
(requirements-previous.txt, for the upgrade rehearsal)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mlflow_gitops import chart

CURRENT_REQUIREMENTS = chart.ROOT / "requirements-e2e.txt"
PREVIOUS_REQUIREMENTS = chart.ROOT / "requirements-previous.txt"


def app_version() -> str:
    return str(yaml.safe_load((chart.CHART / "Chart.yaml").read_text())["appVersion"])


def pins(path: Path = CURRENT_REQUIREMENTS) -> dict[str, str]:
    """name (lower case) -> version of every `name==version` line."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", path.read_text(), flags=re.MULTILINE)
    return {name.lower(): version for name, version in found}


def previous_version() -> str:
    found = pins(PREVIOUS_REQUIREMENTS).get("mlflow")
    assert found, f"{PREVIOUS_REQUIREMENTS.name}: no `mlflow==<version>` line"
    return found


def parse(version: str) -> tuple[int, ...]:
    """A release version as numbers (1.2.3 -> (1, 2, 3)); anything else is refused."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{version!r} is not a MAJOR.MINOR.PATCH release"
    return tuple(int(part) for part in version.split("."))

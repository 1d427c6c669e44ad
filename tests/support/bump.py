"""A version bump as Renovate makes one, for tests that show a bump needs no test edit."""

from __future__ import annotations

import re


def bump_patch(chart_yaml: str, version: str) -> str:
    """Chart.yaml text with the dependency line `version: x.y.z` moved one patch up."""
    major, minor, patch = version.split(".")
    line = re.compile(rf"^(\s+version:\s*\"?){re.escape(version)}(\"?\s*)$", re.MULTILINE)
    bumped, count = line.subn(rf"\g<1>{major}.{minor}.{int(patch) + 1}\g<2>", chart_yaml)
    assert count == 1, f"no single dependency line `version: {version}` in Chart.yaml"
    return bumped

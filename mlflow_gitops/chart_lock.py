"""Write charts/<chart>/Chart.lock for the dependencies pinned in its Chart.yaml.

`helm dependency update` writes this file but needs the chart repository online to do it. Every
dependency here is pinned to an exact version, so the lock is fully determined by Chart.yaml: this
script computes the same digest helm does (sha256 of the JSON of [dependencies, locked
dependencies]) so the lock can be refreshed offline. `helm dependency build` checks it.

Usage: chart_lock.py CHART_DIR [--check]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# helm's chart.Dependency fields in declaration order, as encoding/json writes them.
FIELDS = ("name", "version", "repository", "condition", "tags", "enabled", "import-values", "alias")
REQUIRED = ("name", "repository")
GENERATED = "2026-11-28T00:00:00Z"
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def as_go_json(dep: dict[str, Any]) -> dict[str, Any]:
    return {k: dep[k] for k in FIELDS if k in REQUIRED or dep.get(k)}


def digest(dependencies: list[dict[str, Any]]) -> str:
    req = [as_go_json(d) for d in dependencies]
    locked = [
        {"name": d["name"], "version": d["version"], "repository": d["repository"]} for d in dependencies
    ]
    data = json.dumps([req, locked], separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def render(chart_dir: Path) -> str:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    deps: list[dict[str, Any]] = chart.get("dependencies", [])
    for dep in deps:
        if not EXACT_VERSION.match(str(dep.get("version", ""))):
            raise SystemExit(
                f"{chart_dir}/Chart.yaml: dependency {dep.get('name')!r} has version "
                f"{dep.get('version')!r}; pin an exact version (x.y.z) to lock it offline"
            )
    lock = {
        "dependencies": [
            {"name": d["name"], "repository": d["repository"], "version": d["version"]} for d in deps
        ],
        "digest": digest(deps),
        "generated": GENERATED,
    }
    return yaml.safe_dump(lock, sort_keys=True)


def main(argv: list[str]) -> int:
    chart_dir = Path(argv[1])
    expected = render(chart_dir)
    lock_file = chart_dir / "Chart.lock"
    if "--check" in argv:
        if not lock_file.exists() or lock_file.read_text() != expected:
            print(f"{lock_file} is out of date: run `make lock`", file=sys.stderr)
            return 1
        return 0
    lock_file.write_text(expected)
    print(f"wrote {lock_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""`make render-check`: render every environment afresh and fail when rendered/ is not that render.

Each values/<env>.yaml is rendered (and validated) exactly as `make render` does, but into a
temporary directory, so the work tree is never written. A render that differs is printed as a
unified diff; a values file without a committed render, or a render without its values file, is
named. CI runs this after `make deps`; a failure means: run `make render-all` and commit rendered/.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from pathlib import Path

from mlflow_gitops import render
from mlflow_gitops.chart import RENDERED

FIX = "run `make deps render-all` and commit rendered/"
MAX_DIFF_LINES = 200


def differences(rendered: Path | None = None) -> list[str]:
    """One message per environment whose committed render (in rendered/) is missing, stale or orphaned."""
    rendered = rendered or RENDERED
    problems: list[str] = []
    envs = render.environments()
    with tempfile.TemporaryDirectory() as work:
        for env in envs:
            fresh = render.render(env, out_dir=Path(work)).read_text()
            committed = rendered / f"{env}.yaml"
            if not committed.exists():
                problems.append(f"rendered/{env}.yaml is missing (values/{env}.yaml has no committed render)")
                continue
            diff = list(
                difflib.unified_diff(
                    committed.read_text().splitlines(keepends=True),
                    fresh.splitlines(keepends=True),
                    fromfile=f"rendered/{env}.yaml (committed)",
                    tofile=f"rendered/{env}.yaml (fresh render)",
                )
            )
            if diff:
                shown = "".join(diff[:MAX_DIFF_LINES])
                more = (
                    f"\n... {len(diff) - MAX_DIFF_LINES} more diff lines"
                    if len(diff) > MAX_DIFF_LINES
                    else ""
                )
                problems.append(f"rendered/{env}.yaml is stale:\n{shown}{more}")
    for orphan in sorted({p.stem for p in rendered.glob("*.yaml")} - set(envs)):
        problems.append(f"rendered/{orphan}.yaml has no values/{orphan}.yaml: delete it or add the values")
    return problems


def main() -> int:
    problems = differences()
    for problem in problems:
        print(problem, flush=True)
    if problems:
        print(f"make render-check: rendered/ is not what the chart renders: {FIX}")
        return 1
    print(f"rendered/: {', '.join(render.environments())} current")
    return 0


if __name__ == "__main__":
    sys.exit(main())

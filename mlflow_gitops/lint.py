"""`make lint`: ruff (format check and lint, configured in pyproject.toml), yamllint (.yamllint.yaml)
and `helm lint --strict` of the chart with each values/<env>.yaml.

helm lint needs the upstream chart (`make deps`): without it those checks are skipped, saying so,
and under CI=true they fail instead. tests/test_lint.py runs the same checks, one test each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mlflow_gitops import chart
from mlflow_gitops.checks import Result, exit_status, run_checks, run_in_repo
from mlflow_gitops.render import environments, how_to_provide
from mlflow_gitops.versions import KUBE_VERSION, ROOT


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]
    needs_upstream: bool = False

    def run(self) -> Result:
        return run_in_repo(self.argv)


def checks() -> list[Check]:
    """Every lint check, in the order `make lint` runs them. Paths are relative to the repository."""
    python = sys.executable
    found = [
        Check("ruff format", (python, "-m", "ruff", "format", "--check", ".")),
        Check("ruff check", (python, "-m", "ruff", "check", "--output-format", "concise", ".")),
        Check("yamllint", (python, "-m", "yamllint", "--strict", ".")),
    ]
    chart_dir = chart.CHART.relative_to(ROOT).as_posix()
    for env in environments():
        argv = (chart.helm(), "lint", "--strict", "--kube-version", KUBE_VERSION)
        argv += ("--values", f"values/{env}.yaml", chart_dir)
        found.append(Check(f"helm lint {env}", argv, needs_upstream=True))
    return found


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def main() -> int:
    failed: list[str] = []
    upstream = chart.upstream_present()

    def runnable() -> Iterator[tuple[str, Callable[[], Result]]]:
        for check in checks():
            if check.needs_upstream and not upstream:
                if under_ci():
                    failed.append(check.name)
                    print(f"FAIL {check.name}: CI=true and {how_to_provide()}", flush=True)
                else:
                    print(f"skip {check.name}: {how_to_provide()}", flush=True)
                continue
            yield check.name, check.run

    run_checks(runnable(), failed)
    return exit_status(failed, f"make lint: {len(failed)} failed: {', '.join(failed)}")


if __name__ == "__main__":
    sys.exit(main())

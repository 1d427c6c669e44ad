"""A Renovate bump of the upstream chart needs a re-derived lock and a re-render, never a test edit:
the offline suite, run in a copy of the checkout whose upstream pin moved one patch, still passes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mlflow_gitops import chart
from tests.support.bump import bump_patch

# Built tools and venvs are not in git: the copy uses the checkout's.
SHARED = ("bin", ".venv", ".venv-scan")


def checkout_copy(into: Path) -> Path:
    """The tracked files of the checkout as they are now, in a repository of their own, plus links to
    its built tools (ignored there, as here)."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=chart.ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        source = chart.ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    for git in (["init", "-q"], ["add", "-A"]):  # tests that list tracked files see the same ones
        subprocess.run(["git", *git], cwd=into, check=True, capture_output=True)
    for name in SHARED:
        if (chart.ROOT / name).exists():
            (into / name).symlink_to(chart.ROOT / name)
    return into


def offline_ignores() -> list[str]:
    """The --ignore flags of `make test-offline`'s recipe: the suite this test runs is that one."""
    recipe = re.search(r"^test-offline:.*\n\t(.*)$", (chart.ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe, "the Makefile has no test-offline recipe"
    return re.findall(r"--ignore=\S+", recipe.group(1))


def imported_from(copy: Path, env: dict[str, str]) -> str:
    code = "import mlflow_gitops; print(mlflow_gitops.__file__)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, check=True
    ).stdout


def test_a_patch_bump_of_the_upstream_chart_passes_the_offline_suite_unedited(tmp_path: Path) -> None:
    copy = checkout_copy(tmp_path / "checkout")
    chart_yaml = copy / "charts" / "mlflow-stack" / "Chart.yaml"
    (dep,) = yaml.safe_load(chart_yaml.read_text())["dependencies"]
    chart_yaml.write_text(bump_patch(chart_yaml.read_text(), str(dep["version"])))
    env = {k: v for k, v in os.environ.items() if k != "REQUIRE_UPSTREAM"} | {"PYTHONPATH": str(copy)}
    assert imported_from(copy, env).startswith(str(copy)), "the copy would test the checkout's package"
    lock = [sys.executable, "-m", "mlflow_gitops.chart_lock", "charts/mlflow-stack"]  # what `make lock` runs
    subprocess.run(lock, cwd=copy, env=env, check=True, capture_output=True)
    (locked,) = yaml.safe_load((copy / "charts" / "mlflow-stack" / "Chart.lock").read_text())["dependencies"]
    assert locked["version"] != dep["version"], "the lock did not follow the bump"

    suite = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    ignores = offline_ignores()
    assert "--ignore=tests/node" in ignores, ignores  # the suite would need root and the node's binaries
    suite += [*ignores, f"--ignore=tests/{Path(__file__).name}"]
    done = subprocess.run(suite, cwd=copy, env=env, capture_output=True, text=True, timeout=1800, check=False)
    tail = done.stdout[-4000:]
    assert done.returncode == 0, f"the offline suite failed after bumping to {locked['version']}:\n{tail}"

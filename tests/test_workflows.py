"""The CI workflows (.github/workflows/, docs/ci.md): clean under actionlint and zizmor, actions pinned
by digest, least privilege, and running the make targets that .ci/run and the README run, so the
three cannot drift apart."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_gitops import install_postgres, render, tools, workflows
from mlflow_gitops.versions import PINS, ROOT

CI = workflows.WORKFLOWS / "ci.yml"
REFRESH = workflows.WORKFLOWS / "render-refresh.yml"
SHELL_OPERATORS = {"&&", "||", ";", "|"}
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    if True in loaded:  # YAML 1.1 reads the key `on` as a boolean
        loaded["on"] = loaded.pop(True)
    return loaded


def make_targets(script: str) -> list[str]:
    """The targets of every `make` command of a shell script, in order (options and VAR= skipped)."""
    targets: list[str] = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word != "make":
                continue
            for arg in words[i + 1 :]:
                if arg in SHELL_OPERATORS:
                    break
                if not arg.startswith("-") and "=" not in arg:
                    targets.append(arg)
    return targets


def job_targets(workflow: Path, job: str) -> list[str]:
    steps = load(workflow)["jobs"][job]["steps"]
    return [t for step in steps for t in make_targets(step.get("run", ""))]


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z0-9][a-z0-9-]*):(?!=)", text, flags=re.MULTILINE))


def readme_test_command() -> str:
    """The command README (or the docs split from it) names as the test command."""
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        found = re.search(r"The test command[^\n]*\n+```sh\n(.+?)\n```", doc.read_text(), flags=re.DOTALL)
        if found:
            return found[1].strip()
    raise AssertionError("README.md: no paragraph 'The test command ...' followed by a ```sh block")


def test_workflows_pass_actionlint() -> None:
    out = workflows.actionlint()
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_workflows_and_hooks_pass_zizmor() -> None:
    out = workflows.zizmor()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No findings to report" in out.stdout + out.stderr


def test_the_checkers_refuse_a_bad_workflow(tmp_path: Path) -> None:
    """An unpinned action, an event field expanded into a script and an unknown key must be caught."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    timeout: 5\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    lint = subprocess.run([tools.binary("actionlint"), str(bad)], capture_output=True, text=True, check=False)
    assert lint.returncode != 0 and "timeout" in lint.stdout, lint.stdout
    audit = subprocess.run(
        [str(workflows.VENV_BIN / "zizmor"), "--offline", str(bad.parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit.returncode != 0, audit.stdout
    assert "template-injection" in audit.stdout and "unpinned-uses" in audit.stdout, audit.stdout


def test_actionlint_is_the_pinned_one() -> None:
    assert tools.matches(tools.binary("actionlint"), next(t for t in tools.TOOLS if t.name == "actionlint"))
    assert PINS["ACTIONLINT_VERSION"].startswith("v")


def test_full_job_runs_the_steps_of_ci_run_in_order() -> None:
    """ci.yml's `make test` job is .ci/run, step for step, plus `make deps` (the chart, online) and
    the controllers of the node tests that need the chart (`make node-flux`, `node-external-secrets`)."""
    ci_run = make_targets((ROOT / ".ci" / "run").read_text())
    job = job_targets(CI, "test")
    online = ("deps", "node-flux", "node-external-secrets")
    assert [t for t in job if t not in online] == ci_run, f".ci/run runs {ci_run}, ci.yml's test job {job}"
    assert job.index("deps") < job.index("node-flux") < job.index("test")
    assert job.index("deps") < job.index("node-external-secrets") < job.index("test")


def test_readme_test_command_is_what_ci_runs_last() -> None:
    command = readme_test_command()
    assert make_targets(command) == ["test"], command
    assert make_targets((ROOT / ".ci" / "run").read_text())[-1] == "test"
    assert job_targets(CI, "test")[-1] == "test"


def test_fast_job_checks_render_lint_and_the_offline_suite_with_the_chart() -> None:
    assert job_targets(CI, "fast") == ["tools", "deps", "render-check", "lint", "test-offline"]
    (offline,) = [s for s in load(CI)["jobs"]["fast"]["steps"] if "test-offline" in s.get("run", "")]
    assert offline["env"]["REQUIRE_UPSTREAM"] == "1"
    assert load(CI)["env"]["CI"] == "true", "without CI=true a missing prerequisite skips instead of failing"


def test_refresh_job_locks_fetches_and_renders_every_environment() -> None:
    assert job_targets(REFRESH, "render") == ["lock", "deps", "render-all"]
    assert load(REFRESH)["on"] == {"push": {"branches": ["renovate/**"]}}


def test_every_make_target_ci_and_the_hooks_call_exists() -> None:
    called = {*make_targets((ROOT / ".ci" / "run").read_text())}
    for path in workflows.workflow_files():
        for job in load(path)["jobs"]:
            called |= set(job_targets(path, job))
    for hook in yaml.safe_load(workflows.PRE_COMMIT.read_text())["repos"][0]["hooks"]:
        called |= set(make_targets(hook["entry"]))
    missing = called - makefile_targets()
    assert not missing, f"called but not defined in the Makefile: {sorted(missing)}"


def uses_lines() -> list[tuple[str, str]]:
    return [
        (path.name, line.strip())
        for path in workflows.workflow_files()
        for line in path.read_text().splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]


def test_every_action_is_pinned_to_one_full_digest_with_its_version() -> None:
    """Renovate's github-actions manager bumps the digest and the version comment together."""
    pinned: dict[str, set[tuple[str, str]]] = {}
    for name, line in uses_lines():
        found = re.fullmatch(r"(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)", line)
        assert found, f"{name}: `{line}` is not `owner/action@<40-hex digest> # vX.Y.Z`"
        pinned.setdefault(found[1], set()).add((found[2], found[3]))
    assert pinned, "no action found"
    drifted = {action: sorted(pins) for action, pins in pinned.items() if len(pins) > 1}
    assert not drifted, f"one digest and version per action: {drifted}"
    renovate = json.loads((ROOT / "renovate.json").read_text())
    assert "github-actions" in renovate["enabledManagers"]


def test_only_the_refresh_push_job_may_write() -> None:
    writers = {}
    for path in workflows.workflow_files():
        workflow = load(path)
        assert workflow["permissions"] == {"contents": "read"}, f"{path.name}: top-level permissions"
        assert "concurrency" in workflow, f"{path.name}: no concurrency group"
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions", {})
            if any(level == "write" for level in granted.values()):
                writers[f"{path.name}:{name}"] = granted
    assert writers == {"render-refresh.yml:push": {"contents": "write", "actions": "write"}}


def test_refresh_pushes_as_an_author_renovate_ignores_and_only_generated_files() -> None:
    """Otherwise Renovate would take the branch as edited by a person and stop updating it."""
    renovate = json.loads((ROOT / "renovate.json").read_text())
    assert renovate["gitIgnoredAuthors"] == [BOT_EMAIL]
    assert f'user.email="{BOT_EMAIL}"' in REFRESH.read_text()
    refused = [env for env in render.environments() if not re.fullmatch(r"[a-z0-9-]+", env)]
    assert not refused, f"render-refresh.yml pushes only rendered/[a-z0-9-]+.yaml, not {refused}"


def test_checkouts_keep_no_credentials_and_caches_are_keyed_on_the_pins() -> None:
    for path in workflows.workflow_files():
        for name, job in load(path)["jobs"].items():
            for step in job["steps"]:
                action, inputs = step.get("uses", "").split("@")[0], step.get("with", {})
                where = f"{path.name}:{name}: {action}"
                if action == "actions/checkout":
                    assert inputs.get("persist-credentials") is False, where
                if action == "actions/cache":
                    assert "hashFiles('tools/" in inputs["key"], where
                if action == "actions/setup-python":
                    assert (
                        inputs["cache"] == "pip" and "requirements*.txt" in inputs["cache-dependency-path"]
                    ), where


def test_pre_commit_hooks_are_local_and_valid() -> None:
    config = yaml.safe_load(workflows.PRE_COMMIT.read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "a remote hook repository downloads"
    for hook in config["repos"][0]["hooks"]:
        first = shlex.split(hook["entry"])[0]
        assert hook["language"] == "unsupported", hook["id"]
        assert first == "make" or first.startswith((".venv/bin/", "bin/")), f"{hook['id']}: {hook['entry']}"
        if first != "make":
            assert (ROOT / first).exists(), f"{hook['id']}: {first} is not installed (`make tools`)"
    out = subprocess.run(
        [str(workflows.VENV_BIN / "pre-commit"), "validate-config", str(workflows.PRE_COMMIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("euid", "sudo_ok", "prefix"), [(0, False, []), (1001, True, ["sudo", "-n"]), (1001, False, None)]
)
def test_debian_packages_install_as_root_or_through_passwordless_sudo(
    monkeypatch: pytest.MonkeyPatch, euid: int, sudo_ok: bool, prefix: list[str] | None
) -> None:
    """A hosted runner's job is an ordinary user with passwordless sudo; .ci/as-root does the same."""
    monkeypatch.setattr(install_postgres.os, "geteuid", lambda: euid)
    monkeypatch.setattr(install_postgres.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(
        install_postgres.subprocess,
        "run",
        lambda argv, **_: subprocess.CompletedProcess(argv, 0 if sudo_ok else 1),
    )
    assert install_postgres.as_root() == prefix

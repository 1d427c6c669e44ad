"""What a killed node left is removed by the next start (mlflow_gitops.node.leftovers): its
processes, its large state; the logs and everything the machine had before stay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow_gitops.node import host, leftovers


def before_now() -> set[Path]:
    """What the machine has now: a record listing it makes `clean` leave it alone."""
    return {p for p in host.OUTSIDE_PATHS if p.exists()} | set(host.kubepods_cgroups())


def test_a_killed_runs_processes_are_killed_and_its_state_removed_but_its_logs_kept(tmp_path: Path) -> None:
    run = tmp_path / "mlflow-node-killed"
    for name in (*leftovers.LARGE, "logs"):
        (run / name).mkdir(parents=True)
        (run / name / "file").write_text("state")
    # a component of the killed run, still running: its command line names the run directory
    component = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--root-dir={run}"])
    try:
        record = {"pid": 1, **leftovers.facts(run, "", {}, before_now())}
        said: list[str] = []
        done = leftovers.clean(record, said.append)
        assert component.wait(timeout=30) == -9, "the run's process was not killed"
    finally:
        component.kill()
    assert any(line.startswith(f"killed pid {component.pid}:") for line in done), done
    assert [name for name in leftovers.LARGE if (run / name).exists()] == []
    assert (run / "logs" / "file").read_text() == "state"
    assert said and all(line.startswith("a killed run (pid 1) left: ") for line in said), said
    assert host.processes_under(run) == []


def test_a_holder_killed_before_it_recorded_its_run_leaves_nothing_to_clean() -> None:
    assert leftovers.clean({"pid": 1}) == []


def test_only_writable_sysctls_are_recorded_to_be_put_back() -> None:
    sysctls = host.Sysctls()
    sysctls.record()
    assert sysctls.saved, "no sysctl recorded"
    read_only = [key for key in sysctls.saved if not (Path("/proc/sys") / key).stat().st_mode & 0o222]
    assert read_only == []
    assert "net/netfilter/nf_conntrack_count" not in sysctls.saved  # a counter: never written back

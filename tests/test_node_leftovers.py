"""What a killed node left is removed by the next start (mlflow_gitops.node.leftovers): its
processes (found by the paths they name, or in the kubelet's cgroups whatever their root), its
large state; its logs, other processes and what the machine had before stay.

The machine's own cgroup and state paths are replaced by directories under tmp_path, so the tests
never touch a node that may be running on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_gitops.node import build, host, leftovers
from mlflow_gitops.node.node import Node

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Stand-ins for the machine's paths: one that existed before the run, one the run made, and a
    kubelet cgroup tree the run made."""
    paths = {name: tmp_path / "machine" / name for name in ("before", "made", "kubepods")}
    for path in paths.values():
        path.mkdir(parents=True)
    monkeypatch.setattr(host, "OUTSIDE_PATHS", (paths["before"], paths["made"]))
    monkeypatch.setattr(host, "kubepods_cgroups", lambda: [paths["kubepods"]])
    return paths


def container_cgroup(machine: dict[str, Path], run: Path | None, container_id: str, pid: int) -> Path:
    """The cgroupfs driver's directory of a container, holding `pid`; the id in the run's task state
    when `run` is given."""
    cgroup = machine["kubepods"] / "besteffort" / "pod-uid" / container_id
    cgroup.mkdir(parents=True)
    (cgroup / "cgroup.procs").write_text(f"{pid}\n")
    if run is not None:
        (run / leftovers.TASKS / container_id).mkdir(parents=True)
    return cgroup


def test_a_killed_runs_processes_are_killed_and_its_state_removed_but_its_logs_kept(
    tmp_path: Path, machine: dict[str, Path]
) -> None:
    run = tmp_path / "mlflow-node-killed"
    for name in (*leftovers.LARGE, "logs"):
        (run / name).mkdir(parents=True)
        (run / name / "file").write_text("state")
    # a component of the killed run: an argument names a path under the run directory
    component = subprocess.Popen([*SLEEP, f"--root-dir={run}/kubelet/root"])
    # the run's container: its command names nothing of the run, its cgroup is named by its id
    container = subprocess.Popen(SLEEP)
    cgroup = container_cgroup(machine, run, "c0ffee", container.pid)
    # a container that is not the run's, and another checkout's process named like the run
    other = subprocess.Popen(SLEEP)
    container_cgroup(machine, None, "0ther", other.pid)
    neighbour = subprocess.Popen([*SLEEP, f"{run}-other/etcd"])
    try:
        record = {"pid": 1, **leftovers.facts(run, "", {}, {machine["before"]})}
        said: list[str] = []
        done = leftovers.clean(record, said.append)
        assert component.wait(timeout=30) == -9, "the run's process was not killed"
        assert container.wait(timeout=30) == -9, "the run's container was not killed"
        assert neighbour.poll() is None, "a process of another directory was killed"
        assert other.poll() is None, "a container that is not the run's was killed"
    finally:
        for process in (component, container, other, neighbour):
            process.kill()
    assert any(line.startswith(f"killed pid {component.pid}:") for line in done), done
    assert f"killed pid {container.pid}: in {cgroup}" in done, done
    assert [name for name in leftovers.LARGE if (run / name).exists()] == []
    assert (run / "logs" / "file").read_text() == "state"
    assert machine["before"].exists() and not machine["made"].exists()
    # a stand-in cgroup is a plain directory holding files: rmdir fails and the line says so
    assert f"could not remove cgroup tree {machine['kubepods']}" in done, done
    assert said and all(line.startswith("a killed run (pid 1) left: ") for line in said), said


def test_a_container_in_a_cgroup_tree_older_than_the_run_is_killed_and_the_tree_kept(
    tmp_path: Path, machine: dict[str, Path]
) -> None:
    run = tmp_path / "run"
    container = subprocess.Popen(SLEEP)
    container_cgroup(machine, run, "c0ffee", container.pid)
    try:
        before = {machine["before"], machine["kubepods"]}
        done = leftovers.clean({"pid": 1, **leftovers.facts(run, "", {}, before)}, lambda _: None)
        assert container.wait(timeout=30) == -9, "the container was not killed"
    finally:
        container.kill()
    assert any(line.startswith(f"killed pid {container.pid}: in ") for line in done), done
    assert not [line for line in done if "cgroup tree" in line], done


def test_a_start_that_fails_while_cleaning_keeps_the_killed_runs_record_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(record: dict, say) -> list[str]:
        raise RuntimeError("processes outlived SIGKILL")

    monkeypatch.setattr(build, "missing", list)
    monkeypatch.setattr(leftovers, "clean", fails)
    lock = tmp_path / "node.lock"
    lock.write_text(json.dumps({"pid": 1, "run_dir": "/tmp/mlflow-node-killed"}))
    node = Node(tmp_path / "run", log=False)
    node._lock = host.MachineLock(lock)
    with pytest.raises(RuntimeError, match="outlived"), node:
        pass
    assert [r["run_dir"] for r in json.loads(lock.read_text())["abandoned"]] == ["/tmp/mlflow-node-killed"]


def test_a_holder_killed_before_it_recorded_its_run_leaves_nothing_to_clean() -> None:
    assert leftovers.clean({"pid": 1}) == []


def test_only_writable_sysctls_are_recorded_to_be_put_back() -> None:
    sysctls = host.Sysctls()
    sysctls.record()
    assert sysctls.saved, "no sysctl recorded"
    read_only = [key for key in sysctls.saved if not (Path("/proc/sys") / key).stat().st_mode & 0o222]
    assert read_only == []
    assert "net/netfilter/nf_conntrack_count" not in sysctls.saved  # a counter: never written back


@pytest.mark.parametrize(
    ("arg", "names"),
    [
        ("/tmp/mlflow-node-a", True),
        ("/tmp/mlflow-node-a/etcd", True),
        ("--root-dir=/tmp/mlflow-node-a/kubelet/root", True),
        ("--runtime-endpoint=unix:///tmp/mlflow-node-a/containerd/containerd.sock", True),
        ("/tmp/mlflow-node-ab/etcd", False),
        ("--run-dir=/tmp/mlflow-node-a-other", False),
        ("/tmp", False),
    ],
)
def test_a_process_is_the_runs_when_an_argument_is_its_directory_or_a_path_under_it(
    arg: str, names: bool
) -> None:
    assert host.names_path(arg, "/tmp/mlflow-node-a") is names

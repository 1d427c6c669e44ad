"""What a killed node left on the machine, removed by the next node's start.

A node stopped by SIGKILL (a CI timeout, an OOM kill) never runs its stop: its containers (found
by their ids in the kubelet's cgroup trees) and their shims keep running, its network namespace and
mounts stay, the kubelet's cgroup tree and the host sysctls stay as it set them, and its etcd and
unpacked images hold gigabytes. The machine lock (host.MachineLock) keeps the killed run's record,
which a clean stop empties; the next start finds it and calls `clean`, which undoes each of those
from the record, the way Node's stop does.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from mlflow_gitops.node import host

# what a run writes that a stop removes (the logs stay)
LARGE = ("etcd", "containerd/root", "images")
TASKS = "containerd/state/io.containerd.runtime.v2.task/k8s.io"  # a directory per container id


def facts(run_dir: Path, netns: str, sysctls: dict[str, str], outside_before: set[Path]) -> dict:
    """The record a running node keeps in the machine lock: what `clean` needs after a kill."""
    return {
        "run_dir": str(run_dir),
        "netns": netns,
        "sysctls": sysctls,
        "outside_before": sorted(str(p) for p in outside_before),
    }


def kill_all(find, timeout: float = 60) -> list[str]:
    """SIGKILL what `find()` lists (`pid N: ...` lines) until it lists nothing or `timeout` s have
    passed (a process in uninterruptible sleep outlives SIGKILL: the caller's check names it);
    returns the lines killed."""
    killed, deadline = [], time.monotonic() + timeout
    while (found := find()) and time.monotonic() < deadline:
        for line in found:
            try:
                os.kill(int(line.split()[1].rstrip(":")), signal.SIGKILL)
                if line not in killed:
                    killed.append(line)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it (a kill cannot do more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def container_ids(run_dir: Path) -> set[str]:
    """The ids of the containers and sandboxes the run's containerd started (its task state)."""
    tasks = run_dir / TASKS
    return {p.name for p in tasks.iterdir() if p.is_dir()} if tasks.is_dir() else set()


def in_containers(run_dir: Path) -> list[str]:
    """The processes of the run's containers: those in a cgroup named after one of its container
    ids in the kubelet's trees (the cgroupfs driver's `kubepods/<qos>/pod<uid>/<id>`), whatever
    their root (runc pivots them into their own). Never this process nor its parents."""
    ids, mine, found = container_ids(run_dir), host.ancestors(), {}
    for top in host.kubepods_cgroups() if ids else []:
        for cgroup in top.rglob("*"):
            if cgroup.name in ids and cgroup.is_dir():
                for pid in sorted(host.cgroup_pids(cgroup) - mine):
                    found.setdefault(pid, cgroup)  # a process is in every hierarchy: named once
    return [f"pid {pid}: in {cgroup}" for pid, cgroup in found.items() if alive(pid)]


def processes(run_dir: Path) -> list[str]:
    """The run's processes: those naming its directory, and its containers (by id)."""
    return host.processes_under(run_dir) + in_containers(run_dir)


def undo(run_dir: Path, netns: str, sysctls: dict[str, str], before: set[Path]) -> list[str]:
    """What a stop does once the components are down, and what `clean` does for a killed run: kill
    the run's processes, unmount, delete the network namespace, remove the cgroup trees and machine
    paths that were not there `before`, put the sysctls back, remove the large state (the logs
    stay). Returns what was done, each as a line."""
    done = [f"killed {line}" for line in kill_all(lambda: processes(run_dir))]
    mounts = host.mounts_under(str(run_dir))
    host.unmount_under(run_dir)
    left = set(host.mounts_under(str(run_dir)))
    done += [f"unmounted {m}" for m in mounts if m not in left]
    namespace = host.NetworkNamespace(netns)
    if netns and namespace.exists():
        namespace.delete()
        done.append(f"deleted network namespace {netns}")
    for cgroup in sorted(set(host.kubepods_cgroups()) - before):
        host.remove_cgroup_tree(cgroup)
        done.append(f"{'could not remove' if cgroup.exists() else 'removed'} cgroup tree {cgroup}")
    outside = [p for p in host.OUTSIDE_PATHS if p not in before and p.exists()]
    large = [run_dir / name for name in LARGE if (run_dir / name).exists()]
    for path in outside + large:
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"{'could not remove' if path.exists() else 'removed'} {path}")
    return done + [f"sysctl {line}" for line in host.Sysctls(sysctls).restore()]


def clean(record: dict, say=print) -> list[str]:
    """Undo what the run of `record` (a killed holder's, from host.MachineLock) left; returns what
    was done, each as a line. RuntimeError when a process of the run outlived SIGKILL."""
    run_dir = Path(record.get("run_dir", ""))
    if not record.get("run_dir") or not run_dir.is_absolute():
        return []  # the holder died before it recorded anything: it had touched nothing
    before = {Path(p) for p in record.get("outside_before", [])}
    done = undo(run_dir, record.get("netns", ""), record.get("sysctls", {}), before)
    for line in done:
        say(f"a killed run (pid {record.get('pid', '?')}) left: {line}")
    if survivors := processes(run_dir):
        raise RuntimeError(f"processes of the killed run in {run_dir} outlived SIGKILL: {survivors}")
    return done

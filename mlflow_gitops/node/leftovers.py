"""What a killed node left on the machine, removed by the next node's start.

A node stopped by SIGKILL (a CI timeout, an OOM kill) never runs its stop: its components and
containers keep running, its network namespace and mounts stay, the kubelet's cgroup tree and the
host sysctls stay as it set them, and its etcd and unpacked images hold gigabytes. The machine lock
(host.MachineLock) keeps the killed run's record, which a clean stop empties; the next start finds
it and calls `clean`, which undoes each of those from the record, the way Node's stop does.
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


def facts(run_dir: Path, netns: str, sysctls: dict[str, str], outside_before: set[Path]) -> dict:
    """The record a running node keeps in the machine lock: what `clean` needs after a kill."""
    return {
        "run_dir": str(run_dir),
        "netns": netns,
        "sysctls": sysctls,
        "outside_before": sorted(str(p) for p in outside_before),
    }


def kill_under(run_dir: Path, timeout: float = 60) -> list[str]:
    """SIGKILL the processes of the run directory and wait until none is left."""
    killed, deadline = [], time.monotonic() + timeout
    while found := host.processes_under(run_dir):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {run_dir} outlived SIGKILL: {found}")
        for line in found:
            try:
                os.kill(int(line.split()[1].rstrip(":")), signal.SIGKILL)
                killed.append(line)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed


def clean(record: dict, say=print) -> list[str]:
    """Undo what the run of `record` (a killed holder's, from host.MachineLock) left; returns what
    was done, each as a line."""
    run_dir = Path(record.get("run_dir", ""))
    if not record.get("run_dir") or not run_dir.is_absolute():
        return []  # the holder died before it recorded anything: it had touched nothing
    done = [f"killed {line}" for line in kill_under(run_dir)]
    mounts = host.mounts_under(str(run_dir))
    host.unmount_under(run_dir)
    done += [f"unmounted {m}" for m in mounts]
    netns = host.NetworkNamespace(record.get("netns", ""))
    if netns.name and netns.exists():
        netns.delete()
        done.append(f"deleted network namespace {netns.name}")
    before = {Path(p) for p in record.get("outside_before", [])}
    for cgroup in set(host.kubepods_cgroups()) - before:
        host.remove_cgroup_tree(cgroup)
        done.append(f"removed cgroup tree {cgroup}")
    for path in set(host.OUTSIDE_PATHS) - before:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path}")
    done += [f"sysctl {line}" for line in host.Sysctls(record.get("sysctls", {})).restore()]
    for name in LARGE:
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name, ignore_errors=True)
            done.append(f"removed {run_dir / name}")
    for line in done:
        say(f"a killed run (pid {record.get('pid', '?')}) left: {line}")
    return done

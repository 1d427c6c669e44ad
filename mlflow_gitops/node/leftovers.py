"""What a killed node left on the machine, removed by the next node's start.

A node stopped by SIGKILL (a CI timeout, an OOM kill) never runs its stop: its containers and their
shims keep running, its network namespace and mounts stay, the kubelet's cgroup tree and the host
sysctls stay as it set them, and its etcd and unpacked images hold gigabytes. The machine lock
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


def kill_all(find, what: str, timeout: float = 60) -> list[str]:
    """SIGKILL what `find()` lists (`pid N: ...` lines) until it lists nothing; returns the lines."""
    killed, deadline = [], time.monotonic() + timeout
    while found := find():
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {what} outlived SIGKILL for {timeout:.0f} s: {found}")
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


def in_cgroups(tops: list[Path]):
    """A finder of the processes in the cgroup trees `tops` (containers: their root is their own)."""

    def find() -> list[str]:
        found: dict[int, Path] = {}  # a process is in every hierarchy's tree: named once
        for top in tops:
            for pid in sorted(host.cgroup_pids(top)):
                found.setdefault(pid, top)
        return [f"pid {pid}: in {top}" for pid, top in found.items() if alive(pid)]

    return find


def clean(record: dict, say=print) -> list[str]:
    """Undo what the run of `record` (a killed holder's, from host.MachineLock) left; returns what
    was done, each as a line."""
    run_dir = Path(record.get("run_dir", ""))
    if not record.get("run_dir") or not run_dir.is_absolute():
        return []  # the holder died before it recorded anything: it had touched nothing
    before = {Path(p) for p in record.get("outside_before", [])}
    done = [f"killed {line}" for line in kill_all(lambda: host.processes_under(run_dir), str(run_dir))]
    # Every process in the kubelet's trees, even ones that existed before the run: the machine lock
    # is held, so no other node's kubelet uses them, and the next kubelet would kill them anyway.
    done += [
        f"killed {line}" for line in kill_all(in_cgroups(host.kubepods_cgroups()), "the kubelet's cgroups")
    ]
    cgroups = sorted(set(host.kubepods_cgroups()) - before)
    mounts = host.mounts_under(str(run_dir))
    host.unmount_under(run_dir)
    left = set(host.mounts_under(str(run_dir)))
    done += [f"unmounted {m}" for m in mounts if m not in left]
    netns = host.NetworkNamespace(record.get("netns", ""))
    if netns.name and netns.exists():
        netns.delete()
        done.append(f"deleted network namespace {netns.name}")
    for cgroup in cgroups:
        host.remove_cgroup_tree(cgroup)
        done.append(f"{'could not remove' if cgroup.exists() else 'removed'} cgroup tree {cgroup}")
    outside = [p for p in host.OUTSIDE_PATHS if p not in before and p.exists()]
    large = [run_dir / name for name in LARGE if (run_dir / name).exists()]
    for path in outside + large:
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"{'could not remove' if path.exists() else 'removed'} {path}")
    done += [f"sysctl {line}" for line in host.Sysctls(record.get("sysctls", {})).restore()]
    for line in done:
        say(f"a killed run (pid {record.get('pid', '?')}) left: {line}")
    return done

"""What the node does to the machine, and how a stop proves it undid it.

* The node's network namespace (`ip netns add`): a veth `node0` with the node address, its peer
  in the same namespace, the default route on it (everything not local to the namespace is
  dropped there, so no packet reaches the machine's interfaces or any outside address), forwarding and bridge netfilter
  on (kube-proxy's DNAT must see traffic between pods on the same bridge). Pods get their own
  namespaces from containerd, joined to the `cni0` bridge inside the node's.
* Host sysctls the kubelet rewrites (it sets kernel.panic, vm.overcommit_memory... for its own
  defaults) and kube-proxy's conntrack ones, recorded before the start and written back on stop.
* Leftovers: processes, mounts, network namespaces and the host's iptables rules a stop must not
  leave behind.
* One node per machine at a time (`MachineLock`): the kubelet's cgroup tree, the host sysctls and
  the leftover checks are machine-wide, so a second node waits for the first to stop.
* Free space (`require_free_space`): below the kubelet's eviction floor the node is under disk
  pressure (pods evicted, new ones refused), so a start on a nearly full disk fails at once, naming
  the filesystem and what it has.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_IP = "10.200.0.1"
NODE_PREFIX = 24
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
NETNS_DIR = Path("/run/netns")
MACHINE_LOCK = Path("/run/mlflow-gitops-node.lock")
EVICTION_FREE = 2**30  # the kubelet's evictionHard nodefs/imagefs.available
# what a run writes under its directory (etcd, containerd's unpacked images, MLflow's the largest;
# pod volumes), above the eviction floor
NEEDED_FREE = 4 * 2**30 + EVICTION_FREE

HOST_SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class NetworkNamespace:
    name: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def enter(self) -> list[str]:
        """The prefix that runs a command in this namespace only (the mounts stay the machine's,
        so the kubelet's volume mounts are the ones containerd sees)."""
        return ["nsenter", f"--net={self.path}", "--"]

    def create(self) -> None:
        sh("ip", "netns", "add", self.name)
        inside = ["ip", "-n", self.name]
        sh(*inside, "link", "set", "lo", "up")
        # A veth pair with both ends inside (this kernel has no dummy driver): the peer has no
        # address, so anything routed out of node0 finds no neighbour and is dropped.
        sh(*inside, "link", "add", "node0", "type", "veth", "peer", "name", "node0-peer")
        sh(*inside, "addr", "add", f"{NODE_IP}/{NODE_PREFIX}", "dev", "node0")
        sh(*inside, "link", "set", "node0-peer", "up")
        sh(*inside, "link", "set", "node0", "up")
        sh(*inside, "route", "add", "default", "dev", "node0")
        for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            sh(*self.enter(), "sysctl", "-q", "-w", f"{key}=1")

    def exists(self) -> bool:
        return self.path.exists()

    def delete(self) -> None:
        if self.exists():
            sh("ip", "netns", "delete", self.name)


@dataclass
class Sysctls:
    """Host sysctl values (from this process's namespace, the machine's) to put back on stop."""

    saved: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def keys() -> list[str]:
        conntrack = sorted(p.name for p in Path("/proc/sys/net/netfilter").glob("nf_conntrack_*"))
        return [*HOST_SYSCTLS, *(f"net/netfilter/{name}" for name in conntrack)]

    def record(self) -> None:
        for key in self.keys():
            path = Path("/proc/sys") / key
            if path.exists() and path.stat().st_mode & 0o222:  # not the read-only ones (counters)
                self.saved[key] = path.read_text().strip()

    def restore(self) -> list[str]:
        """Write back what changed; returns `key: now -> saved` for each."""
        changed = []
        for key, value in self.saved.items():
            path = Path("/proc/sys") / key
            now = path.read_text().strip()
            if now != value:
                path.write_text(value + "\n")
                changed.append(f"{key.replace('/', '.')}: {now} -> {value}")
        return changed

    def differing(self) -> list[str]:
        return [
            f"{key.replace('/', '.')}={(Path('/proc/sys') / key).read_text().strip()} (was {value})"
            for key, value in self.saved.items()
            if (Path("/proc/sys") / key).read_text().strip() != value
        ]


@dataclass
class MachineLock:
    """An exclusive flock on MACHINE_LOCK, released by the kernel when the holding process dies, so
    a crashed node never blocks the next one. The file holds the holder's record (JSON: its pid, run
    directory, what it found before it started) and is emptied by a clean release: a record found
    on acquiring is a killed run's (`abandoned`), for mlflow_gitops.node.leftovers to clean; it is
    kept in the new holder's record until the new holder writes its own, after cleaning."""

    path: Path = MACHINE_LOCK
    _fd: int | None = None
    abandoned: list[dict] = field(default_factory=list)

    def acquire(self, timeout: float, say=print) -> float:
        """Wait (polling, up to `timeout` s) for the lock; returns the seconds waited."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._read(fd).get("pid", "?")
                if time.monotonic() - started > timeout:
                    os.close(fd)
                    raise TimeoutError(
                        f"another node (pid {holder}) still holds {self.path} after {timeout:.0f} s"
                    )
                if not told:
                    say(
                        f"another node runs on this machine (pid {holder}, {self.path}); waiting for it to stop"
                    )
                    told = True
                time.sleep(2)
        found = self._read(fd)
        # a killed run's record, and those a start killed while cleaning had not cleaned yet
        self.abandoned = (
            [*found.pop("abandoned", []), found] if found.get("run_dir") else found.get("abandoned", [])
        )
        self._fd = fd
        if self.abandoned:
            self.record(abandoned=self.abandoned)
        else:
            self.record()
        return time.monotonic() - started

    @staticmethod
    def _read(fd: int) -> dict:
        text = os.pread(fd, 1 << 20, 0).decode(errors="replace").strip()
        try:
            found = json.loads(text) if text else {}
        except ValueError:
            found = {"pid": text}
        return found if isinstance(found, dict) else {"pid": text}

    def record(self, **facts) -> None:
        """Write the holder's record (its pid and `facts`) for a later start to find if it is killed."""
        assert self._fd is not None, "record() before acquire()"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps({"pid": os.getpid(), **facts}) + "\n").encode(), 0)

    def cleaned(self) -> None:
        """The first abandoned record is cleaned: only the others stay in the holder's record."""
        self.abandoned.pop(0)
        self.record(abandoned=self.abandoned)

    def release(self, keep_record: bool = False) -> None:
        """Drop the lock; the record is emptied unless `keep_record` (a stop that failed: the next
        start cleans what it left) or abandoned records are still uncleaned."""
        if self._fd is not None:
            if not keep_record and not self.abandoned:
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def require_free_space(path: Path, needed: int | None = None) -> None:
    """RuntimeError naming the filesystem of `path` when it has less than `needed` bytes free
    (NEEDED_FREE unless given)."""
    needed = NEEDED_FREE if needed is None else needed
    usage = os.statvfs(path)
    free = usage.f_bavail * usage.f_frsize
    if free < needed:
        raise RuntimeError(
            f"the node needs {needed / 2**30:.1f} GiB free on the filesystem of {path}, which has "
            f"{free / 2**30:.1f} GiB: below {EVICTION_FREE / 2**30:.0f} GiB the kubelet evicts pods "
            "and refuses new ones; free some space (old runs' directories, caches) and start again"
        )


def iptables_rules() -> str:
    """The machine's own iptables rules (counters dropped), to compare before and after."""
    lines = sh("iptables-save", check=False).stdout.splitlines()
    return "\n".join(line.split(" [")[0] for line in lines if line and not line.startswith("#"))


def netns_names() -> set[str]:
    return {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.exists() else set()


def ancestors() -> set[int]:
    """This process and its parents (a start that reuses a run directory names it too)."""
    pid, found = os.getpid(), set()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


def names_path(arg: str, run: str) -> bool:
    """Whether a command-line argument is the run directory or a path under it, alone or as an
    option's value (`--root-dir=<run>/kubelet/root`)."""
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
    value = value.removeprefix("unix://")  # a socket's address
    return value == run or value.startswith(run + "/")


def processes_under(run_dir: Path) -> list[str]:
    """The node's processes: an argument naming the run directory or a path under it (every
    component and containerd's shims), or a root directory inside it. Not this process nor its
    parents."""
    run, found, mine = str(run_dir), [], ancestors()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            root = os.readlink(proc / "root")
        except OSError:
            continue
        if any(names_path(arg, run) for arg in args) or root.startswith(run + "/"):
            found.append(f"pid {proc.name}: {' '.join(args).strip()[:160]}")
    return found


def mounts_under(*prefixes: str) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if any(mountpoint == p or mountpoint.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(mountpoint)
    return out


def unmount_under(run_dir: Path) -> None:
    """Lazily unmount what is left under the run directory, deepest first."""
    for mountpoint in sorted(mounts_under(str(run_dir)), key=len, reverse=True):
        sh("umount", "-l", mountpoint, check=False)


# Paths the components write outside the run directory whatever their configuration: the CNI
# library's result cache, the kubelet's device-plugin directory, the shims' socket directory.
OUTSIDE_PATHS = (Path("/var/lib/cni"), Path("/var/lib/kubelet"), Path("/run/containerd"))


def kubepods_cgroups() -> list[Path]:
    """The kubelet's cgroup trees (cgroupfs driver), one per hierarchy."""
    return sorted(Path("/sys/fs/cgroup").glob("*/kubepods"))


def cgroup_pids(top: Path) -> set[int]:
    """Every process in a cgroup tree (a container's, whatever its root: runc pivots into its own)."""
    pids = set()
    for procs in top.rglob("cgroup.procs"):
        try:
            pids |= {int(pid) for pid in procs.read_text().split()}
        except OSError:
            continue
    return pids


def remove_cgroup_tree(top: Path) -> None:
    """rmdir a cgroup tree deepest first (cgroup directories go with rmdir, never rm)."""
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass
    try:
        top.rmdir()
    except OSError:
        pass

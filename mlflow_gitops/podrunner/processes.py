"""Processes: spawning, process trees, PSS, ports, and polling samplers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from mlflow_gitops.podrunner.base import PodRunnerError


def run_command(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise PodRunnerError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        ).strip()
    except OSError:
        return ""


def pss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    leftovers: list[str] = field(default_factory=list)  # cmdlines of descendants alive after it exited

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        return process_tree(self.pid) if self.alive() else []

    def pss_bytes(self) -> int:
        return pss_bytes(self.tree())

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> int | None:
        """Signal the process, wait up to `grace`, then SIGKILL whatever is left of its tree."""
        if self.alive():
            tree = self.tree()
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self.leftovers = [cmdline(p) for p in tree[1:] if alive(p)]
            signal_all([*self.tree(), *tree], signal.SIGKILL)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return self.popen.returncode

    def kill_tree(self, sig: int = signal.SIGKILL) -> int | None:
        """Signal the process and every descendant at once, parent first (as the runtime kills all
        of a container's cgroup: nothing gets to clean up, nobody is left to respawn a worker)."""
        tree = self.tree()
        signal_all(tree, sig)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.leftovers = [cmdline(p) for p in tree[1:] if alive(p)]
        return self.popen.returncode


def spawn(name: str, argv: Sequence[str], log: Path | None, *, stream: bool = False, **kwargs: Any) -> Proc:
    out: Any = None if stream else (open(log, "ab") if log else subprocess.DEVNULL)  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            **kwargs,
        )
    finally:
        if out not in (None, subprocess.DEVNULL):
            out.close()
    return Proc(name, popen, None if stream else log)


def wait_line(proc: Proc, expect: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.log and proc.log.exists() and expect in proc.log.read_text(errors="replace"):
            return
        if not proc.alive():
            raise PodRunnerError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_tail()}")
        time.sleep(0.05)
    raise PodRunnerError(f"{proc.name}: no {expect!r} within {timeout:.0f}s:\n{proc.log_tail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def unused_name(directory: Path, name: str) -> str:
    """`name`, or `name.2`, `name.3`... whichever does not exist in `directory` yet."""
    found, k = name, 1
    while (directory / found).exists():
        k += 1
        found = f"{name}.{k}"
    return found


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


class Poll:
    """Calls `sample()` every `interval` s in a thread while in the `with` block; keeps the values."""

    def __init__(self, sample: Callable[[], float], interval: float) -> None:
        self._sample, self._interval = sample, interval
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.values.append(self._sample())


class PeakSampler(Poll):
    """Samples the PSS of named process trees every `interval` s; `peaks[name]` in bytes."""

    def __init__(self, trees: Mapping[str, Callable[[], list[int]]], interval: float = 0.5) -> None:
        self.peaks = {name: 0 for name in trees}

        def sample() -> float:
            for name, tree in trees.items():
                self.peaks[name] = max(self.peaks[name], pss_bytes(tree()))
            return float(sum(self.peaks.values()))

        super().__init__(sample, interval)


def wait_http_ok(proc: Proc, url: str, timeout: float) -> None:
    """Until `url` answers 200 (what a readiness probe waits for); raises if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise PodRunnerError(f"the server exited {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise PodRunnerError(f"the server is not ready on {url} after {timeout:.0f}s:\n{proc.log_tail()}")

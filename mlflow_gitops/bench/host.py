"""The machine under the bench: its facts, and CPU time and disk speed read from /proc and the disk."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow_gitops import podrunner

MIB = 2**20


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    bindir = podrunner.postgres_bin()
    pg_out = (
        subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout
        if bindir
        else ""
    )
    pg = m.group(1) if (m := re.search(r"\(PostgreSQL\) (\S+)", pg_out)) else "?"
    versions: dict[str, str | None] = {}
    for dist in ("uvicorn", "SQLAlchemy", "psycopg2-binary"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mlflow": podrunner.mlflow_version(),
        "postgresql": pg,
        "packages": versions,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "loadavg_before": loadavg(),
    }


def started_at(pid: int) -> float:
    """Wall-clock start of a process (from /proc; 10 ms resolution)."""
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes, and the children they have reaped, used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_busy(cpu: int) -> float:
    """Seconds CPU `cpu` has been busy since boot (/proc/stat: all but idle and iowait)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise podrunner.PodRunnerError(f"no cpu{cpu} in /proc/stat")


def pin_tree(pid: int, cpu: int) -> None:
    for p in podrunner.process_tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(int(task.name), {cpu})


def raw_write(directory: Path, size: int) -> float:
    """Seconds to write `size` bytes and fsync them into `directory` (what `dd conv=fsync` does)."""
    block = random.randbytes(MIB)
    path = directory / f".bench-raw-{os.getpid()}"
    started = time.monotonic()
    with path.open("wb", buffering=0) as f:
        for _ in range(size // MIB):
            f.write(block)
        os.fsync(f.fileno())
    elapsed = time.monotonic() - started
    path.unlink()
    return elapsed

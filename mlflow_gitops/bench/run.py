"""make bench: capacity of the rendered MLflow server on one CPU, against MLflow's own defaults.

Every configuration runs, in one run on one machine, through mlflow_gitops.podrunner (a fresh
PostgreSQL and pod each): the server pinned to one CPU (`--server-cpu`, the pod's `limits.cpu: 1`),
PostgreSQL, the stand-in Service forwarder, the load generator and this process on the other
(`--load-cpu`). The load generator runs inside the pod's network namespace (loopback only, no
port-forward in the path), is bounded in requests and time, and stops by itself.

Configurations:

* `defaults`: `mlflow server` with only what running against the same PostgreSQL and artifact
  volume needs (DEFAULTS_ARGS below); the pod's environment (PG* connection variables, allowed
  hosts, secret key) is kept, MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set to MLflow's default
  ("true") and the pool variables to "0", which MLflow ignores (its defaults: 5 + 10 overflow).
* `shipped`: rendered/homelab.yaml as is (the configuration `make render` wrote from
  values/homelab.yaml).
* `previous`: the render at `--baseline` (git, default HEAD) when it differs from the working one.
* `wN jobs on|off`: the render with `--workers=N` (1, 2, 4) and MLFLOW_SERVER_ENABLE_JOB_EXECUTION
  replaced; everything else as rendered.

Measured for each: time to ready, idle PSS; runs created per second (create-run only);
metric values per second (log-batch of `--metrics-per-batch`); artifact upload and download through
the proxy next to a write+fsync of the same size into the same directory; p50/p95 latency of a mix
(create run, log-batch, search) at 1, 8 and 32 closed-loop clients with `/health` probed alongside;
requests answered 4xx/5xx; peak PSS of the server's process tree; peak connections to the database
(pg_stat_activity).

Writes bench/results.json, bench/results.png and the table between the bench markers of README.md
(`--quick` writes to a temporary directory and leaves the README alone).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from mlflow_gitops import podrunner

ROOT = podrunner.ROOT
OUT = ROOT / "bench"
README = ROOT / "README.md"
RENDER = podrunner.DEFAULT_RENDER
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
GIB = 2**30
MIB = 2**20
MB = 10**6
CONTAINER_PORT = 5000
# MLflow's own defaults: nothing but where the metadata (libpq reads PGHOST... from the pod's
# environment) and the proxied artifacts live, and where to listen.
DEFAULTS_ARGS = (
    "server",
    "--backend-store-uri=postgresql+psycopg2://",
    "--artifacts-destination=/mlflow/artifacts",
    "--host=0.0.0.0",
    f"--port={CONTAINER_PORT}",
)
JOBS = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
POOL_VARS = (
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
    "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE",
    "MLFLOW_SQLALCHEMYSTORE_POOLCLASS",
)
MLFLOW_DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Params:
    levels: tuple[int, ...] = (1, 8, 32)
    mix_seconds: float = 15.0  # per concurrency level
    throughput_seconds: float = 10.0  # runs/s and metric values/s
    throughput_clients: int = 8
    max_requests: int = 20000  # per phase
    metrics_per_batch: int = 1000  # MLflow's limit per log-batch
    artifact_mib: int = 256
    health_interval: float = 0.25
    health_timeout: float = 30.0  # long enough to see the real latency
    request_timeout: float = 60.0
    settle_seconds: float = 3.0
    settle_max_seconds: float = 60.0


QUICK = Params(mix_seconds=4, throughput_seconds=3, max_requests=2000, artifact_mib=16, settle_seconds=1)


@dataclass(frozen=True)
class Config:
    name: str
    render: Path
    workers: int | None = None  # None: as rendered
    jobs: bool | None = None  # None: as rendered
    args: tuple[str, ...] | None = None  # replaces the rendered args entirely
    env: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Targets:
    memory_bytes: int
    connections: int
    health_timeout_s: float
    errors_at: int


# ---------------------------------------------------------------------------------------------
# Pure logic


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


def with_workers(args: Sequence[str], workers: int) -> list[str]:
    """The args with `--workers=N` replacing the rendered one (appended when absent)."""
    out = [a for a in args if not a.startswith("--workers")]
    return [*out, f"--workers={workers}"]


def arg_value(argv: Sequence[str], name: str) -> str | None:
    for a in argv:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells, expected {len(headers)}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def replace_block(text: str, body: str, begin: str = BEGIN, end: str = END) -> str:
    """`text` with everything between the begin and end markers replaced by `body`."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"expected exactly one {begin} and one {end}")
    head, rest = text.split(begin)
    _old, tail = rest.split(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def misses(record: Mapping[str, Any], targets: Targets) -> list[str]:
    """The targets a configuration misses (empty: it meets them all)."""
    out: list[str] = []
    if record.get("failed"):
        return ["did not run"]
    if record["peak_pss_bytes"] >= targets.memory_bytes:
        out.append("memory")
    if record["peak_connections"] >= targets.connections:
        out.append("connections")
    top = record["mix"].get(str(targets.errors_at))
    if top is None or top["errors"] > 0:
        out.append(f"4xx/5xx@{targets.errors_at}")
    p95 = top["health"]["p95"] if top else None
    if p95 is None or p95 >= targets.health_timeout_s:
        out.append("/health p95")
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _s(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MIB:.0f}"


def tables(results: Mapping[str, Any]) -> str:
    """The markdown the README block and the terminal show."""
    targets = Targets(**results["targets"])
    levels = [int(x) for x in results["params"]["levels"]]
    top = levels[-1]
    facts = results["machine"]
    noise = max((float(r.get("foreign_cpu_max", 0)) for r in results["configs"]), default=0.0)
    head = (
        f"Measured {facts['date']} on {facts['cpu_model']} ({facts['cores']} cores), "
        f"kernel {facts['kernel']}, Python {facts['python']}, MLflow {facts['mlflow']}, "
        f"PostgreSQL {facts['postgresql']}; load average before the run {facts['loadavg_before']}; "
        f"other processes took at most {noise:.0%} of the server's CPU in any phase. "
        f"Server pinned to one CPU; PostgreSQL and the load generator on the other. "
        f"`make bench` ({results['duration_s'] / 60:.1f} min{', quick' if results['quick'] else ''}); "
        f"details in bench/results.json, chart in bench/results.png."
    )
    rows1: list[list[str]] = []
    rows2: list[list[str]] = []
    for r in results["configs"]:
        name = f"**{r['name']}**" if r["name"] == "shipped" else r["name"]
        if r.get("failed"):
            rows1.append([name, r["settings"]["summary"], *(["-"] * 7)])
            rows2.append([name, *(["-"] * (len(levels) + 4)), "did not run: " + r["failed"][:80]])
            continue
        a = r["artifacts"]
        rows1.append(
            [
                name,
                r["settings"]["summary"],
                _s(r["ready_s"]),
                _mib(r["idle_pss_bytes"]),
                f"{r['runs']['per_s']:.0f}",
                f"{r['metrics']['per_s']:.0f}",
                f"{a['upload_MBps']:.0f} / {a['download_MBps']:.0f}",
                f"{a['raw_write_MBps']:.0f}",
                str(r["errors_total"]),
            ]
        )
        mix = r["mix"]
        lat = [f"{_ms(mix[str(n)]['latency']['p50'])} / {_ms(mix[str(n)]['latency']['p95'])}" for n in levels]
        h = mix[str(top)]["health"]
        missed = misses(r, targets)
        rows2.append(
            [
                name,
                *lat,
                f"{_ms(h['p50'])} / {_ms(h['p95'])} / {_ms(h['max'])}",
                str(mix[str(top)]["errors"]),
                _mib(r["peak_pss_bytes"]),
                str(r["peak_connections"]),
                "yes" if not missed else "no: " + ", ".join(missed),
            ]
        )
    t1 = markdown_table(
        [
            "configuration",
            "settings",
            "ready s",
            "idle PSS MiB",
            "runs/s",
            "metric values/s",
            "artifact up / down MB/s",
            "disk write+fsync MB/s",
            "4xx/5xx (all phases)",
        ],
        rows1,
    )
    t2 = markdown_table(
        [
            "configuration",
            *[f"p50 / p95 ms @{n}" for n in levels],
            f"/health p50 / p95 / max ms @{top}",
            f"4xx/5xx @{top}",
            "peak PSS MiB",
            "peak DB conns",
            "meets targets",
        ],
        rows2,
    )
    legend = (
        f"Targets: peak PSS under {targets.memory_bytes / MIB:.0f} MiB (half the 2Gi limit), peak "
        f"connections under {targets.connections} (half of max_connections), no 4xx/5xx at {top} "
        f"clients, `/health` p95 under the liveness probe timeout ({targets.health_timeout_s:g} s)."
    )
    return f"{textwrap.fill(head, 100)}\n\n{t1}\n\n{t2}\n\n{textwrap.fill(legend, 100)}\n"


# ---------------------------------------------------------------------------------------------
# The load generator (runs inside the pod's network namespace: `_load <spec>`)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Client:
    def __init__(self, host: str, timeout: float) -> None:
        import requests

        self.base, self.timeout = f"http://127.0.0.1:{CONTAINER_PORT}", timeout
        self.http = requests.Session()
        self.http.headers["Host"] = host

    def post(self, endpoint: str, body: Mapping[str, Any]) -> tuple[int, Any, float]:
        started = time.monotonic()
        resp = self.http.post(f"{self.base}/api/2.0/mlflow/{endpoint}", json=body, timeout=self.timeout)
        elapsed = time.monotonic() - started
        return resp.status_code, resp.json() if resp.status_code == 200 else resp.text, elapsed


@dataclass
class Tally:
    """Latencies and answers of one phase, shared by its client threads."""

    max_requests: int
    deadline: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    exceptions: int = 0
    issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """Reserve one request of the budget; False once the time or the budget is spent."""
        with self.lock:
            if self.issued >= self.max_requests or time.monotonic() >= self.deadline:
                return False
            self.issued += 1
            return True

    def record(self, op: str, code: int, elapsed: float, body: Any) -> None:
        with self.lock:
            self.latencies.setdefault(op, []).append(elapsed)
            self.status[str(code)] = self.status.get(str(code), 0) + 1
            if code == 200:
                self.ok[op] = self.ok.get(op, 0) + 1
            if code >= 400 and len(self.samples) < 5:
                self.samples.append(f"{op} {code}: {str(body)[:200]}")

    def failed(self, op: str, err: Exception) -> None:
        with self.lock:
            self.exceptions += 1
            if len(self.samples) < 5:
                self.samples.append(f"{op}: {type(err).__name__}: {str(err)[:200]}")


def _batch(keys: int, steps: int, step0: int) -> list[dict[str, Any]]:
    ts = _now_ms()
    return [
        {"key": f"m{k}", "value": random.random(), "timestamp": ts, "step": step0 + s}
        for s in range(steps)
        for k in range(keys)
    ]


def _client_loop(spec: Mapping[str, Any], tally: Tally, exp_id: str, index: int) -> None:
    client = Client(spec["host"], spec["request_timeout"])
    kind = spec["kind"]
    run_id = ""
    step = 0

    def call(op: str, endpoint: str, body: Mapping[str, Any]) -> Any:
        try:
            code, data, elapsed = client.post(endpoint, body)
        except Exception as err:  # noqa: BLE001 - a timeout or reset is a result here
            tally.failed(op, err)
            return None
        tally.record(op, code, elapsed, data)
        return data if code == 200 else None

    if kind == "metrics":
        made = call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": _now_ms()})
        if made is None:
            return
        run_id = made["run"]["info"]["run_id"]
    while tally.take():
        if kind == "runs":
            call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": _now_ms()})
        elif kind == "metrics":
            per = spec["metrics_per_batch"]
            call("log_batch", "runs/log-batch", {"run_id": run_id, "metrics": _batch(10, per // 10, step)})
            step += per // 10
        else:  # mix: what a training client and a UI do
            made = call("create_run", "runs/create", {"experiment_id": exp_id, "start_time": _now_ms()})
            if made is not None and tally.take():
                body = {
                    "run_id": made["run"]["info"]["run_id"],
                    "metrics": _batch(10, 5, 0),
                    "params": [{"key": f"p{i}", "value": str(i)} for i in range(5)],
                    "tags": [{"key": "client", "value": str(index)}, {"key": "bench", "value": "mix"}],
                }
                call("log_batch", "runs/log-batch", body)
            if tally.take():
                call("search", "runs/search", {"experiment_ids": [exp_id], "max_results": 100})


def _health_loop(spec: Mapping[str, Any], stop: threading.Event, out: dict[str, Any]) -> None:
    import requests

    http = requests.Session()
    http.headers["Host"] = spec["host"]
    while not stop.is_set():
        started = time.monotonic()
        try:
            ok = http.get(f"http://127.0.0.1:{CONTAINER_PORT}/health", timeout=spec["health_timeout"]).ok
        except requests.RequestException:
            ok = False
        out["latencies"].append(time.monotonic() - started)
        out["failed"] += 0 if ok else 1
        stop.wait(spec["health_interval"])


def _artifacts(spec: Mapping[str, Any]) -> dict[str, Any]:
    client = Client(spec["host"], 600)
    code, exp, _ = client.post("experiments/create", {"name": f"bench-artifacts-{time.time_ns()}"})
    assert code == 200, exp
    code, run, _ = client.post(
        "runs/create", {"experiment_id": exp["experiment_id"], "start_time": _now_ms()}
    )
    assert code == 200, run
    uri = str(run["run"]["info"]["artifact_uri"])
    path = uri.removeprefix("mlflow-artifacts:/").strip("/")
    url = f"{client.base}/api/2.0/mlflow-artifacts/artifacts/{path}/blob.bin"
    size = int(spec["artifact_mib"]) * MIB
    block = random.randbytes(MIB)

    class Body:
        def __len__(self) -> int:
            return size

        def __iter__(self) -> Iterator[bytes]:
            for _ in range(size // MIB):
                yield block

    started = time.monotonic()
    up = client.http.put(url, data=Body(), timeout=600)
    up_s = time.monotonic() - started
    started = time.monotonic()
    got = 0
    with client.http.get(url, stream=True, timeout=600) as down:
        for chunk in down.iter_content(MIB):
            got += len(chunk)
        down_code = down.status_code
    down_s = time.monotonic() - started
    return {
        "bytes": size,
        "upload_s": up_s,
        "upload_status": up.status_code,
        "download_s": down_s,
        "download_status": down_code,
        "downloaded_bytes": got,
    }


def run_load(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One bounded phase of closed-loop clients (and /health probes); the raw observations."""
    if spec["kind"] == "artifacts":
        return _artifacts(spec)
    setup = Client(spec["host"], spec["request_timeout"])
    code, exp, _ = setup.post("experiments/create", {"name": f"bench-{spec['kind']}-{time.time_ns()}"})
    if code != 200:
        raise SystemExit(f"experiments/create: {code} {exp}")
    started = time.monotonic()
    tally = Tally(max_requests=int(spec["max_requests"]), deadline=started + float(spec["seconds"]))
    health: dict[str, Any] = {"latencies": [], "failed": 0}
    stop = threading.Event()
    prober = threading.Thread(target=_health_loop, args=(spec, stop, health), daemon=True)
    if spec.get("health"):
        prober.start()
    clients = [
        threading.Thread(target=_client_loop, args=(spec, tally, exp["experiment_id"], i), daemon=True)
        for i in range(int(spec["clients"]))
    ]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    elapsed = time.monotonic() - started
    stop.set()
    if prober.is_alive():
        prober.join()
    return {
        "elapsed_s": elapsed,
        "latencies": tally.latencies,
        "status": tally.status,
        "ok": tally.ok,
        "exceptions": tally.exceptions,
        "samples": tally.samples,
        "health": health,
        "client_cpu": time.process_time() / elapsed,
    }


# ---------------------------------------------------------------------------------------------
# Watching the server and the database


class Peak:
    """The largest value `sample()` returned while the block ran (sampled every `interval` s)."""

    def __init__(self, sample: Callable[[], int], interval: float = 0.25) -> None:
        self._sample, self._interval = sample, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._sample())


def _started_at(pid: int) -> float:
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


def settle(stack: podrunner.PodRunner, params: Params) -> float:
    """Wait until the server's start-up work is done (under 10% CPU for a second; at least
    `settle_seconds`, at most `settle_max_seconds`); returns the seconds waited."""
    started = time.monotonic()
    time.sleep(params.settle_seconds)
    while time.monotonic() - started < params.settle_max_seconds:
        before = cpu_seconds(stack.server.tree())
        time.sleep(1)
        if cpu_seconds(stack.server.tree()) - before < 0.1:
            break
    return time.monotonic() - started


def _pin_tree(pid: int, cpu: int) -> None:
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


# ---------------------------------------------------------------------------------------------
# One configuration


def settings(cfg: Config, argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    workers = arg_value(argv, "workers")
    pool = {k: env[k] for k in POOL_VARS if env.get(k) and env[k] != "0"}
    jobs = env.get(JOBS, "true").lower() in ("true", "1")
    pool_text = (
        f"pool {pool.get(POOL_VARS[0], '5')}+{pool.get(POOL_VARS[1], '10')}"
        if pool
        else "pool 5+10 (MLflow default)"
    )
    return {
        "workers": int(workers) if workers else MLFLOW_DEFAULT_WORKERS,
        "job_execution": jobs,
        "pool": pool,
        "summary": f"{workers or MLFLOW_DEFAULT_WORKERS} worker{'' if workers == '1' else 's'}, "
        f"jobs {'on' if jobs else 'off'}, {pool_text}",
    }


def liveness_timeout(render: podrunner.Render) -> float:
    c = render.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    return float(c.get("livenessProbe", {}).get("timeoutSeconds", 1))


def _phase(stack: podrunner.PodRunner, load_cpu: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    argv = [
        "taskset",
        "-c",
        str(load_cpu),
        *stack.in_pod([sys.executable, "-m", "mlflow_gitops.bench", "_load", json.dumps(spec)]),
    ]
    budget = float(spec.get("seconds", 0)) + float(spec["request_timeout"]) + 120
    pss = podrunner.PeakSampler({"server": stack.server.tree}, interval=0.25)

    def side() -> list[int]:  # PostgreSQL and the Service forwarder: the other CPU
        pg = stack.postgres.proc.tree() if stack.postgres.proc else []
        return [*pg, *(p for fwd in stack._forwarders for p in fwd.tree())]

    server_cpu = stack.cpus[0] if stack.cpus else 0
    cpu0, side0, t0 = cpu_seconds(stack.server.tree()), cpu_seconds(side()), time.monotonic()
    core0 = cpu_busy(server_cpu)
    with pss, Peak(stack.postgres.connections) as conns:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=budget, check=False, cwd=ROOT)
    elapsed = time.monotonic() - t0
    busy = (cpu_seconds(stack.server.tree()) - cpu0) / elapsed
    foreign = max(0.0, (cpu_busy(server_cpu) - core0) / elapsed - busy)
    side_busy = (cpu_seconds(side()) - side0) / elapsed
    if done.returncode != 0:
        raise podrunner.PodRunnerError(
            f"load generator ({spec['kind']}) exited {done.returncode}: {done.stderr[-2000:]}"
        )
    out: dict[str, Any] = json.loads(done.stdout)
    out["peak_pss_bytes"] = pss.peaks["server"]
    out["peak_connections"] = conns.peak
    out["server_cpu"] = busy
    out["db_cpu"] = side_busy
    out["foreign_cpu"] = foreign  # others' processes on the server's CPU: noise
    return out


def _errors(out: Mapping[str, Any]) -> int:
    refused: int = sum(int(n) for code, n in out["status"].items() if int(code) >= 400)
    return refused + int(out["exceptions"])


def bench_config(
    cfg: Config, params: Params, server_cpu: int, load_cpu: int, log: Callable[[str], None]
) -> dict[str, Any]:
    stack = podrunner.PodRunner(
        cfg.render,
        cpus=[server_cpu],
        postgres_cpus=[load_cpu],
        args=list(cfg.args) if cfg.args is not None else None,
        env_overrides=dict(cfg.env),
    )
    rendered_args = [str(a) for a in stack.main_container.get("args", [])]
    if cfg.workers is not None:
        stack.args = with_workers(rendered_args, cfg.workers)
    if cfg.jobs is not None:
        stack.env_overrides = {**stack.env_overrides, JOBS: "true" if cfg.jobs else "false"}
    record: dict[str, Any] = {
        "name": cfg.name,
        "note": cfg.note,
        "render": str(cfg.render.relative_to(ROOT) if cfg.render.is_relative_to(ROOT) else cfg.render),
    }
    stack.start()
    try:
        ready = time.time() - _started_at(stack.server.pid)
        for fwd in stack._forwarders:  # the Service stand-in does kube-proxy's work, not the pod's
            _pin_tree(fwd.pid, load_cpu)
        record |= {
            "argv": stack.server_argv,
            "env_overrides": dict(stack.env_overrides),
            "settings": settings(cfg, stack.server_argv, stack.server_env),
            "ready_s": ready,
        }
        log(f"  {record['settings']['summary']}: ready in {ready:.1f} s")
        record["quiet_s"] = settle(stack, params)
        record["idle_pss_bytes"] = stack.server.pss_bytes()
        record["max_connections"] = stack.postgres.max_connections()
        base = {
            "host": stack.route_host,
            "request_timeout": params.request_timeout,
            "health_interval": params.health_interval,
            "health_timeout": params.health_timeout,
            "max_requests": params.max_requests,
            "metrics_per_batch": params.metrics_per_batch,
            "artifact_mib": params.artifact_mib,
        }
        phases: dict[str, dict[str, Any]] = {}
        tput = {"clients": params.throughput_clients, "seconds": params.throughput_seconds}
        phases["runs"] = _phase(stack, load_cpu, {**base, **tput, "kind": "runs"})
        runs = phases["runs"]
        made = runs["ok"].get("create_run", 0)
        record["runs"] = {
            "per_s": made / runs["elapsed_s"],
            "created": made,
            "clients": params.throughput_clients,
        }
        log(f"  runs/s {record['runs']['per_s']:.0f}")
        phases["metrics"] = _phase(stack, load_cpu, {**base, **tput, "kind": "metrics"})
        met = phases["metrics"]
        batches = met["ok"].get("log_batch", 0)
        record["metrics"] = {
            "per_s": batches * params.metrics_per_batch / met["elapsed_s"],
            "batches": batches,
            "per_batch": params.metrics_per_batch,
        }
        log(f"  metric values/s {record['metrics']['per_s']:.0f}")
        art = _phase(stack, load_cpu, {**base, "kind": "artifacts"})
        phases["artifacts"] = art
        destination = arg_value(stack.server_argv, "artifacts-destination") or "/mlflow/artifacts"
        volume = next(
            m["name"] for m in stack.main_container.get("volumeMounts", []) if m["mountPath"] == destination
        )
        raw_s = raw_write(stack.volume_path(volume), art["bytes"])
        art_ok = art["upload_status"] == 200 and art["download_status"] == 200
        record["artifacts"] = {
            "MiB": params.artifact_mib,
            "upload_MBps": art["bytes"] / MB / art["upload_s"] if art_ok else 0.0,
            "download_MBps": art["downloaded_bytes"] / MB / art["download_s"] if art_ok else 0.0,
            "raw_write_MBps": art["bytes"] / MB / raw_s,
            "status": [art["upload_status"], art["download_status"]],
        }
        a = record["artifacts"]
        log(
            f"  artifacts up {a['upload_MBps']:.0f} MB/s, down {a['download_MBps']:.0f} MB/s, "
            f"disk {a['raw_write_MBps']:.0f} MB/s"
        )
        record["mix"] = {}
        for n in params.levels:
            out = _phase(
                stack,
                load_cpu,
                {**base, "kind": "mix", "clients": n, "seconds": params.mix_seconds, "health": True},
            )
            phases[f"mix{n}"] = out
            every = [x for lat in out["latencies"].values() for x in lat]
            record["mix"][str(n)] = {
                "requests": len(every),
                "per_s": len(every) / out["elapsed_s"],
                "latency": summary(every),
                "by_op": {op: summary(lat) for op, lat in out["latencies"].items()},
                "health": {**summary(out["health"]["latencies"]), "failed": out["health"]["failed"]},
                "errors": _errors(out),
                "status": out["status"],
                "samples": out["samples"],
                "peak_pss_bytes": out["peak_pss_bytes"],
                "peak_connections": out["peak_connections"],
                "server_cpu": out["server_cpu"],
                "client_cpu": out["client_cpu"],
                "db_cpu": out["db_cpu"],
                "foreign_cpu": out["foreign_cpu"],
            }
            m = record["mix"][str(n)]
            log(
                f"  mix @{n}: p50/p95 {_ms(m['latency']['p50'])}/{_ms(m['latency']['p95'])} ms, "
                f"{m['per_s']:.0f} req/s, /health p95 {_ms(m['health']['p95'])} "
                f"max {_ms(m['health']['max'])} ms, errors {m['errors']}, CPU server {m['server_cpu']:.0%} "
                f"client {m['client_cpu']:.0%} db {m['db_cpu']:.0%} others {m['foreign_cpu']:.0%}, "
                f"PSS {_mib(m['peak_pss_bytes'])} MiB, conns {m['peak_connections']}"
            )
        record["errors_total"] = sum(_errors(p) for name, p in phases.items() if name != "artifacts") + (
            0 if art_ok else 1
        )
        record["error_samples"] = [s for p in phases.values() for s in p.get("samples", [])][:10]
        record["foreign_cpu_max"] = max(float(p["foreign_cpu"]) for p in phases.values())
        record["peak_pss_bytes"] = max(int(p["peak_pss_bytes"]) for p in phases.values())
        record["peak_connections"] = max(int(p["peak_connections"]) for p in phases.values())
    finally:
        stack.stop()
    if stack.server.leftovers:
        record["leftovers"] = stack.server.leftovers
    return record


# ---------------------------------------------------------------------------------------------
# The run


def configurations(render: Path, baseline: Path | None) -> list[Config]:
    jobs_default = {JOBS: "true", **{k: "0" for k in POOL_VARS[:3]}}
    out = [
        Config(
            "defaults",
            render,
            args=DEFAULTS_ARGS,
            env=jobs_default,
            note="mlflow server " + " ".join(DEFAULTS_ARGS[1:]) + f"; {JOBS}=true (MLflow's default), "
            "pool variables 0 (ignored by MLflow: its defaults); the pod's other environment kept",
        ),
        Config(
            "shipped",
            render,
            note=f"{render.relative_to(ROOT) if render.is_relative_to(ROOT) else render} as is",
        ),
    ]
    if baseline is not None:
        out.append(Config("previous", baseline, note=f"the render of git {baseline.stem.split('@', 1)[1]}"))
    for workers in (1, 2, 4):
        for jobs in (False, True):
            out.append(
                Config(
                    f"w{workers} jobs {'on' if jobs else 'off'}",
                    render,
                    workers=workers,
                    jobs=jobs,
                    note=f"the render with --workers={workers} and {JOBS}={'true' if jobs else 'false'}",
                )
            )
    return out


def baseline_render(rev: str, render: Path, into: Path) -> Path | None:
    """The render at git `rev` when it differs from the working one; None otherwise."""
    rel = render.resolve().relative_to(ROOT)
    done = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or done.stdout == render.read_text():
        return None
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = into / f"{render.stem}@{sha}.yaml"
    path.write_text(done.stdout)
    return path


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
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def chart(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results["configs"] if not r.get("failed")]
    names = [r["name"] for r in ok]
    targets = Targets(**results["targets"])
    levels = [int(x) for x in results["params"]["levels"]]
    top = str(levels[-1])
    fig, ax = plt.subplots(2, 3, figsize=(18, 9.5))
    for r in ok:
        ax[0][0].plot(
            levels, [r["mix"][str(n)]["latency"]["p95"] * 1000 for n in levels], marker="o", label=r["name"]
        )
    ax[0][0].set(
        title="mix p95 latency", xlabel="concurrent clients", ylabel="ms", xscale="log", xticks=levels
    )
    ax[0][0].set_xticklabels([str(n) for n in levels])
    ax[0][0].legend(fontsize=7)

    def bars(a: Any, values: list[float], title: str, unit: str, lines: Sequence[tuple[float, str]]) -> None:
        palette = {"shipped": "tab:green", "previous": "tab:orange", "defaults": "tab:gray"}
        colors = [palette.get(n, "tab:blue") for n in names]
        a.barh(names, values, color=colors)
        for (x, label), style in zip(lines, ("--", ":"), strict=False):
            a.axvline(x, color="tab:red", linestyle=style, label=label)
        if lines:
            a.legend(fontsize=7, loc="lower right")
        a.set(title=title, xlabel=unit)
        a.invert_yaxis()

    bars(
        ax[0][1],
        [r["peak_pss_bytes"] / MIB for r in ok],
        "peak PSS (process tree)",
        "MiB",
        [(targets.memory_bytes / MIB, "target"), (2 * GIB / MIB, "limit 2Gi")],
    )
    bars(
        ax[0][2],
        [r["peak_connections"] for r in ok],
        "peak DB connections",
        "connections",
        [(targets.connections, "target"), (2 * targets.connections, "max_connections")],
    )
    bars(
        ax[1][0],
        [r["mix"][top]["health"]["p95"] * 1000 for r in ok],
        f"/health p95 @{top} clients",
        "ms",
        [(targets.health_timeout_s * 1000, "liveness timeout")],
    )
    bars(ax[1][1], [r["runs"]["per_s"] for r in ok], "runs created per second", "runs/s", [])
    bars(
        ax[1][2], [r["metrics"]["per_s"] for r in ok], "metric values per second (log-batch)", "values/s", []
    )
    fig.suptitle(f"MLflow {results['machine']['mlflow']} on one CPU ({results['machine']['cpu_model']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def publish(results: Mapping[str, Any], out: Path, readme: Path | None) -> str:
    text = tables(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    chart(results, out / "results.png")
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), text))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_gitops.bench", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="cmd")
    load = sub.add_parser("_load", help=argparse.SUPPRESS)
    load.add_argument("spec")
    parser.add_argument("--quick", action="store_true", help="short phases, small artifact; no README update")
    parser.add_argument("--only", help="comma-separated configuration names (e.g. 'shipped,defaults')")
    parser.add_argument("--render", type=Path, default=RENDER)
    parser.add_argument(
        "--baseline", default="HEAD", help="git revision whose render is row 'previous' ('' for none)"
    )
    parser.add_argument(
        "--out", type=Path, help="directory for results.json/.png (default bench/, --quick: a temp dir)"
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--levels", help="concurrent clients of the mix, comma-separated (default 1,8,32)")
    parser.add_argument(
        "--set-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add to every configuration's environment (exploration; implies --no-readme)",
    )
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument(
        "--publish-only", action="store_true", help="rewrite chart and README from results.json"
    )
    for f in dataclasses.fields(Params):
        if f.type in ("float", "int"):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=float if f.type == "float" else int)
    args = parser.parse_args(argv)
    if args.cmd == "_load":
        print(json.dumps(run_load(json.loads(args.spec))))
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="mlflow-bench-")) if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    readme = None if args.quick or args.only or args.no_readme or args.set_env else README
    if args.publish_only:
        print(publish(json.loads((out / "results.json").read_text()), out, readme))
        return 0
    params = QUICK if args.quick else Params()
    params = dataclasses.replace(
        params,
        **{
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(Params)
            if getattr(args, f.name, None) is not None
        },
    )
    if args.levels:
        params = dataclasses.replace(params, levels=tuple(int(n) for n in args.levels.split(",")))
    podrunner.preflight()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stack on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.sched_setaffinity(0, {args.load_cpu})
    render = args.render.resolve()
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-render-") as scratch:
        baseline = baseline_render(args.baseline, render, Path(scratch)) if args.baseline else None
        extra = dict(kv.split("=", 1) for kv in args.set_env)
        configs = [dataclasses.replace(c, env={**c.env, **extra}) for c in configurations(render, baseline)]
        if args.only:
            wanted = [n.strip() for n in args.only.split(",")]
            known = [c.name for c in configs]
            if set(wanted) - set(known):
                parser.error(f"unknown configurations {sorted(set(wanted) - set(known))}; known: {known}")
            configs = [c for c in configs if c.name in wanted]
        results = run_all(configs, params, render, args.server_cpu, args.load_cpu, args.quick, out)
    print(publish(results, out, readme))
    print(
        f"wrote {out / 'results.json'}, {out / 'results.png'}" + (f", {readme}" if readme else ""),
        file=sys.stderr,
    )
    return 0


def run_all(
    configs: Sequence[Config],
    params: Params,
    render: Path,
    server_cpu: int,
    load_cpu: int,
    quick: bool,
    out: Path,
) -> dict[str, Any]:
    """Every configuration, one after the other; a configuration that fails is recorded as such."""
    rendered = podrunner.Render.load(render)
    max_conn = int(rendered.one("Cluster")["spec"]["postgresql"]["parameters"]["max_connections"])
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "quick": quick,
        "params": dataclasses.asdict(params),
        "cpus": {"server": server_cpu, "postgres_and_load": load_cpu},
        "targets": dataclasses.asdict(
            Targets(
                memory_bytes=GIB,
                connections=max_conn // 2,
                health_timeout_s=liveness_timeout(rendered),
                errors_at=max(params.levels),
            )
        ),
        "configs": [],
    }
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    log(f"load average {results['machine']['loadavg_before']}; {len(configs)} configurations; out: {out}")
    for cfg in configs:
        log(f"{cfg.name}: {cfg.note}")
        try:
            results["configs"].append(bench_config(cfg, params, server_cpu, load_cpu, log))
        except (podrunner.PodRunnerError, subprocess.TimeoutExpired, OSError) as err:
            log(f"  failed: {err}")
            results["configs"].append(
                {"name": cfg.name, "note": cfg.note, "failed": str(err), "settings": {"summary": "-"}}
            )
    results["duration_s"] = time.monotonic() - started
    results["machine"]["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return results

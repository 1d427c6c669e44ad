"""Running the configurations: a stack per configuration, its phases, and what was seen meanwhile.

Every configuration runs through mlflow_gitops.podrunner (a fresh PostgreSQL and pod each): the
server pinned to one CPU (`--server-cpu`, the pod's `limits.cpu: 1`), PostgreSQL, the stand-in
Service forwarder, the load generator and this process on the other (`--load-cpu`). A phase is
one run of the load generator inside the pod's network namespace (load.py), bounded in requests
and time; meanwhile the server's peak PSS, the peak connections to the database, the CPU of the
server, of the database side and of other processes on the server's CPU are sampled, and the
server's log of the phase explains each 4xx/5xx (serverlog.py).

Measured for each configuration: time to ready, idle PSS; runs created per second (create-run
only); metric values per second (log-batch of `metrics_per_batch`); artifact upload and download
through the proxy next to a write+fsync of the same size into the same directory; p50/p95 latency
of a mix (create run, log-batch, search) at each of `levels` closed-loop clients with /health
probed alongside; answers 4xx/5xx with their causes; peak PSS of the server's process tree; peak
connections to the database (pg_stat_activity).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_gitops import podrunner
from mlflow_gitops.bench import host, serverlog
from mlflow_gitops.bench.configs import (
    GIB,
    JOBS,
    MB,
    ROOT,
    Config,
    Params,
    Targets,
    arg_value,
    relative,
    settings,
    with_arg,
    with_workers,
)
from mlflow_gitops.bench.load import VERIFY_TIMEOUT
from mlflow_gitops.bench.probes import Probe
from mlflow_gitops.bench.stats import summary

Log = Callable[[str], None]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def settle(stack: podrunner.PodRunner, params: Params) -> float:
    """Wait until the server's start-up work is done (under 10% CPU for a second; at least
    `settle_seconds`, at most `settle_max_seconds`); returns the seconds waited."""
    started = time.monotonic()
    time.sleep(params.settle_seconds)
    while time.monotonic() - started < params.settle_max_seconds:
        before = host.cpu_seconds(stack.server.tree())
        time.sleep(1)
        if host.cpu_seconds(stack.server.tree()) - before < 0.1:
            break
    return time.monotonic() - started


def _log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def _log_from(path: Path | None, offset: int) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def phase(stack: podrunner.PodRunner, load_cpu: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    """One run of the load generator in the pod, and what the server did meanwhile."""
    spec = {"port": stack.container_port, **spec}
    argv = [
        "taskset",
        "-c",
        str(load_cpu),
        *stack.in_pod([sys.executable, "-m", "mlflow_gitops.bench", "_load", json.dumps(spec)]),
    ]
    budget = (
        float(spec.get("seconds", 0)) + float(spec.get("drain_seconds", 0)) + float(spec["request_timeout"])
    )
    budget += 2 * VERIFY_TIMEOUT if spec.get("verify") else 0.0
    pss = podrunner.PeakSampler({"server": stack.server.tree}, interval=0.25)
    conns = podrunner.Poll(stack.postgres.connections, interval=0.25)

    def side() -> list[int]:  # PostgreSQL and the Service forwarder: the other CPU
        pg = stack.postgres.proc.tree() if stack.postgres.proc else []
        return [*pg, *(p for fwd in stack._forwarders for p in fwd.tree())]

    server_cpu = stack.cpus[0] if stack.cpus else 0
    log_offset = _log_size(stack.server.log)
    cpu0, side0, t0 = host.cpu_seconds(stack.server.tree()), host.cpu_seconds(side()), time.monotonic()
    core0 = host.cpu_busy(server_cpu)
    conns0 = stack.postgres.connections()
    with pss, conns:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=budget + 120, check=False, cwd=ROOT
        )
    elapsed = time.monotonic() - t0
    busy = (host.cpu_seconds(stack.server.tree()) - cpu0) / elapsed
    foreign = max(0.0, (host.cpu_busy(server_cpu) - core0) / elapsed - busy)
    side_busy = (host.cpu_seconds(side()) - side0) / elapsed
    if done.returncode != 0:
        raise podrunner.PodRunnerError(
            f"load generator ({spec['kind']}) exited {done.returncode}: {done.stderr[-2000:]}"
        )
    out: dict[str, Any] = json.loads(done.stdout)
    out["peak_pss_bytes"] = pss.peaks["server"]
    out["peak_connections"] = int(max([conns0, *conns.values, stack.postgres.connections()]))
    out["server_cpu"] = busy
    out["db_cpu"] = side_busy
    out["foreign_cpu"] = foreign  # others' processes on the server's CPU: noise
    events = out.get("events") or []
    out["explained"] = serverlog.explain(_log_from(stack.server.log, log_offset), events) if events else []
    return out


def errors(out: Mapping[str, Any]) -> int:
    refused: int = sum(int(n) for code, n in out["status"].items() if int(code) >= 400)
    return refused + int(out["exceptions"])


def start(cfg: Config, server_cpu: int, load_cpu: int) -> podrunner.PodRunner:
    """The configuration's stack, started, the Service forwarder moved to the load's CPU."""
    stack = podrunner.PodRunner(
        cfg.render,
        cpus=[server_cpu],
        postgres_cpus=[load_cpu],
        args=list(cfg.args) if cfg.args is not None else None,
        env_overrides=dict(cfg.env),
    )
    args = list(cfg.args) if cfg.args is not None else [str(a) for a in stack.main_container.get("args", [])]
    if cfg.workers is not None:
        stack.args = args = with_workers(args, cfg.workers)
    for name, value in cfg.arg_overrides.items():
        stack.args = args = with_arg(args, name, value)
    if cfg.jobs is not None:
        stack.env_overrides = {**stack.env_overrides, JOBS: "true" if cfg.jobs else "false"}
    stack.start()
    for fwd in stack._forwarders:  # the Service stand-in does kube-proxy's work, not the pod's
        host.pin_tree(fwd.pid, load_cpu)
    return stack


def base_spec(stack: podrunner.PodRunner, params: Params) -> dict[str, Any]:
    return {
        "host": stack.route_host,
        "request_timeout": params.request_timeout,
        "health_interval": params.health_interval,
        "health_timeout": params.health_timeout,
        "max_requests": params.max_requests,
        "metrics_per_batch": params.metrics_per_batch,
        "artifact_mib": params.artifact_mib,
    }


def _artifacts(
    stack: podrunner.PodRunner, load_cpu: int, base: Mapping[str, Any], mib: int
) -> dict[str, Any]:
    art = phase(stack, load_cpu, {**base, "kind": "artifacts"})
    destination = arg_value(stack.server_argv, "artifacts-destination") or "/mlflow/artifacts"
    volume = next(
        m["name"] for m in stack.main_container.get("volumeMounts", []) if m["mountPath"] == destination
    )
    raw_s = host.raw_write(stack.volume_path(volume), art["bytes"])
    ok = art["upload_status"] == 200 and art["download_status"] == 200
    return {
        "MiB": mib,
        "upload_MBps": art["bytes"] / MB / art["upload_s"] if ok else 0.0,
        "download_MBps": art["downloaded_bytes"] / MB / art["download_s"] if ok else 0.0,
        "raw_write_MBps": art["bytes"] / MB / raw_s,
        "status": [art["upload_status"], art["download_status"]],
        "_phase": art,
    }


def mix_record(out: Mapping[str, Any]) -> dict[str, Any]:
    every = [x for lat in out["latencies"].values() for x in lat]
    return {
        "requests": len(every),
        "per_s": len(every) / out["elapsed_s"],
        "latency": summary(every),
        "by_op": {op: summary(lat) for op, lat in out["latencies"].items()},
        "health": {**summary(out["health"]["latencies"]), "failed": out["health"]["failed"]},
        "errors": errors(out),
        "not_retried": serverlog.final_answers(out["status"]),
        "status": out["status"],
        "samples": out["samples"],
        **{k: out[k] for k in ("peak_pss_bytes", "peak_connections", "server_cpu", "client_cpu")},
        **{k: out[k] for k in ("db_cpu", "foreign_cpu")},
    }


def bench_config(cfg: Config, params: Params, server_cpu: int, load_cpu: int, log: Log) -> dict[str, Any]:
    record: dict[str, Any] = {"name": cfg.name, "note": cfg.note, "render": relative(cfg.render)}
    stack = start(cfg, server_cpu, load_cpu)
    try:
        ready = time.time() - host.started_at(stack.server.pid)
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
        base = base_spec(stack, params)
        phases: dict[str, dict[str, Any]] = {}
        tput = {"clients": params.throughput_clients, "seconds": params.throughput_seconds}
        phases["runs"] = runs = phase(stack, load_cpu, {**base, **tput, "kind": "runs"})
        made = runs["ok"].get("create_run", 0)
        record["runs"] = {
            "per_s": made / runs["elapsed_s"],
            "created": made,
            "clients": params.throughput_clients,
        }
        log(f"  runs/s {record['runs']['per_s']:.0f}")
        phases["metrics"] = met = phase(stack, load_cpu, {**base, **tput, "kind": "metrics"})
        batches = met["ok"].get("log_batch", 0)
        record["metrics"] = {
            "per_s": batches * params.metrics_per_batch / met["elapsed_s"],
            "batches": batches,
            "per_batch": params.metrics_per_batch,
        }
        log(f"  metric values/s {record['metrics']['per_s']:.0f}")
        a = _artifacts(stack, load_cpu, base, params.artifact_mib)
        phases["artifacts"] = a.pop("_phase")
        record["artifacts"] = a
        art_ok = a["status"] == [200, 200]
        log(
            f"  artifacts up {a['upload_MBps']:.0f} MB/s, down {a['download_MBps']:.0f} MB/s, "
            f"disk {a['raw_write_MBps']:.0f} MB/s"
        )
        record["mix"] = {}
        for n in params.levels:
            spec = {**base, "kind": "mix", "clients": n, "seconds": params.mix_seconds, "health": True}
            phases[f"mix{n}"] = out = phase(stack, load_cpu, spec)
            record["mix"][str(n)] = m = mix_record(out)
            log(
                f"  mix @{n}: p50/p95 {_ms(m['latency']['p50'])}/{_ms(m['latency']['p95'])} ms, "
                f"{m['per_s']:.0f} req/s, /health p95 {_ms(m['health']['p95'])} "
                f"max {_ms(m['health']['max'])} ms, errors {m['errors']}, CPU server {m['server_cpu']:.0%} "
                f"client {m['client_cpu']:.0%} db {m['db_cpu']:.0%} others {m['foreign_cpu']:.0%}, "
                f"PSS {m['peak_pss_bytes'] / 2**20:.0f} MiB, conns {m['peak_connections']}"
            )
        record["errors_total"] = sum(errors(p) for name, p in phases.items() if name != "artifacts") + (
            0 if art_ok else 1
        )
        record["error_samples"] = [s for p in phases.values() for s in p.get("samples", [])][:10]
        record["errors"] = serverlog.merge({name: p.get("explained", []) for name, p in phases.items()})
        record["foreign_cpu_max"] = max(float(p["foreign_cpu"]) for p in phases.values())
        record["peak_pss_bytes"] = max(int(p["peak_pss_bytes"]) for p in phases.values())
        record["peak_connections"] = max(int(p["peak_connections"]) for p in phases.values())
    finally:
        stack.stop()
    if stack.server.leftovers:
        record["leftovers"] = stack.server.leftovers
    return record


def header(params: Params, render: Path, server_cpu: int, load_cpu: int, quick: bool) -> dict[str, Any]:
    """What every results.json starts with: the machine, the sizes, the CPUs, the targets."""
    rendered = podrunner.Render.load(render)
    max_conn = int(rendered.one("Cluster")["spec"]["postgresql"]["parameters"]["max_connections"])
    container = rendered.one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    return {
        "machine": host.machine_facts(),
        "quick": quick,
        "params": dataclasses.asdict(params),
        "cpus": {"server": server_cpu, "postgres_and_load": load_cpu},
        "targets": dataclasses.asdict(
            Targets(
                memory_bytes=GIB,
                connections=max_conn // 2,
                health_timeout_s=Probe.of(container, "liveness").timeout_s,
                errors_at=max(params.levels),
            )
        ),
    }


def run_all(
    configs: Sequence[Config],
    params: Params,
    render: Path,
    server_cpu: int,
    load_cpu: int,
    quick: bool,
    log: Log,
) -> dict[str, Any]:
    """Every configuration, one after the other; a configuration that fails is recorded as such."""
    results: dict[str, Any] = {**header(params, render, server_cpu, load_cpu, quick), "configs": []}
    started = time.monotonic()
    log(f"load average {results['machine']['loadavg_before']}; {len(configs)} configurations")
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
    results["machine"]["loadavg_after"] = host.loadavg()
    return results

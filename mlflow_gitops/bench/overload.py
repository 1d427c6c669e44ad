"""The overload phase: the render as is, far past its capacity, as a cluster would see it.

On one stack, for each of `overload_levels` (128 and 256) closed-loop clients running the mix for
`overload_seconds`: the clients retry as MLflow's client does (load.py), the kubelet's readiness
and liveness probes run with the rendered settings (probes.py), /health is also measured
sequentially with a long timeout (the latency series the probes are replayed against at every
phase of their period, and for other timeouts), and at the end the runs of the phase are counted
in the store. Recorded per level: latency, /health p50/p95/max, failed probes and whether readiness
would have turned the pod NotReady (with one replica: no endpoint at all) or liveness would have
restarted it, writes not acknowledged in the end (lost), answers a client would not retry, and
every 4xx/5xx with its log excerpt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_gitops.bench import host, runs
from mlflow_gitops.bench.configs import Config, Params, relative, settings
from mlflow_gitops.bench.probes import Probe, judge, timeout_needed, worst_case

PROBES = ("readiness", "liveness")
SWEEP_TIMEOUTS = (10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)


def sweep(series: list[Any], probe: Probe, timeouts: tuple[float, ...] = SWEEP_TIMEOUTS) -> dict[str, Any]:
    """For each timeout (the probe's period and threshold kept): the worst phase's failures."""
    out = {}
    for timeout in sorted({*timeouts, probe.timeout_s}):
        other = Probe(probe.name, probe.period_s, timeout, probe.failure_threshold)
        out[f"{timeout:g}"] = worst_case(series, other)
    return out


def level_record(out: Mapping[str, Any], probes: Mapping[str, Probe]) -> dict[str, Any]:
    """One level's figures from the load generator's raw observations."""
    m = runs.mix_record(out)
    series = sorted(tuple(s) for s in out["health"]["series"])
    m["health_series"] = [[round(t, 3), round(lat, 3), ok] for t, lat, ok in series]
    needed = timeout_needed(series)
    m["health_timeout_needed_s"] = None if math.isinf(needed) else needed  # None: a check failed
    m["probes"] = {}
    for name, probe in probes.items():
        got = out["probes"][name]
        outcome = judge([(r[0], bool(r[2])) for r in got["results"]], probe.failure_threshold)
        m["probes"][name] = {
            "settings": probe.asdict(),
            "offset_s": got["offset"],
            "probes": outcome.probes,
            "failed": outcome.failed,
            "max_in_a_row": outcome.max_in_a_row,
            "tripped": outcome.tripped,
            "tripped_at_s": outcome.tripped_at,
            "results": [[round(r[0], 3), round(r[1], 3), r[2], r[3]] for r in got["results"]],
            "replayed": worst_case(series, probe),
            "sweep": sweep(series, probe),
        }
    ok, stored = out["ok"], out.get("stored", {})
    m["writes"] = {
        **out["writes"],
        "retries": out["retries"],
        "runs_acked": ok.get("create_run", 0),
        "runs_stored": stored.get("runs"),
        "batches_acked": ok.get("log_batch", 0),
        "runs_with_batch_stored": stored.get("runs_with_batch"),
    }
    w = m["writes"]
    w["acked_missing"] = (
        max(0, w["runs_acked"] - w["runs_stored"]) + max(0, w["batches_acked"] - w["runs_with_batch_stored"])
        if "runs" in stored
        else None  # not counted: stored["error"] says why
    )
    # A create-run the client gave up on (timeout) may still be applied, and its retry creates another.
    w["runs_duplicated"] = max(0, w["runs_stored"] - w["runs_acked"]) if "runs" in stored else None
    w["store_check"] = stored.get("error", "ok")

    m["errors_explained"] = out.get("explained", [])
    m["elapsed_s"] = out["elapsed_s"]
    return m


def _line(n: int, m: Mapping[str, Any]) -> str:
    h, p, w = m["health"], m["probes"], m["writes"]
    probes = ", ".join(
        f"{name} {p[name]['failed']}/{p[name]['probes']} failed"
        + (" (would trip)" if p[name]["tripped"] else "")
        for name in PROBES
    )
    return (
        f"  overload @{n}: {m['per_s']:.0f} req/s, p50/p95 {m['latency']['p50'] or 0:.2f}/"
        f"{m['latency']['p95'] or 0:.2f} s; /health p50/p95/max {h['p50'] or 0:.2f}/{h['p95'] or 0:.2f}/"
        f"{h['max'] or 0:.2f} s; {probes}; writes acked {w['acked']} lost {w['lost']}; "
        f"4xx/5xx {m['errors']} (not retried {m['not_retried']}); CPU server {m['server_cpu']:.0%} "
        f"others {m['foreign_cpu']:.0%}"
    )


def bench_overload(
    render: Path,
    params: Params,
    server_cpu: int,
    load_cpu: int,
    quick: bool,
    log: runs.Log,
    env: Mapping[str, str],
    arg_overrides: Mapping[str, str],
) -> dict[str, Any]:
    results = runs.header(params, render, server_cpu, load_cpu, quick)
    changed = " ".join(f"--{k}={v}" for k, v in arg_overrides.items())
    note = f"{relative(render)} as is" + (f" but {changed}" if changed else "")
    cfg = Config("shipped", render, env=dict(env), arg_overrides=dict(arg_overrides), note=note)
    started = time.monotonic()
    log(f"overload: {cfg.note}; load average {results['machine']['loadavg_before']}")
    stack = runs.start(cfg, server_cpu, load_cpu)
    try:
        probes = {name: Probe.of(stack.main_container, name) for name in PROBES}
        record: dict[str, Any] = {
            "name": cfg.name,
            "note": cfg.note,
            "render": relative(render),
            "argv": stack.server_argv,
            "env_overrides": dict(stack.env_overrides),
            "settings": settings(cfg, stack.server_argv, stack.server_env),
            "probes": {name: p.asdict() for name, p in probes.items()},
            "levels": {},
        }
        log("  probes: " + "; ".join(f"{n} {p.text()}" for n, p in probes.items()))
        for n in params.overload_levels:
            quiet = runs.settle(stack, params)
            spec = {
                **runs.base_spec(stack, params),
                "kind": "mix",
                "clients": n,
                "seconds": params.overload_seconds,
                "drain_seconds": params.overload_drain_seconds,
                "request_timeout": params.overload_request_timeout,
                "health_timeout": params.overload_health_timeout,
                "health": True,
                "health_checkers": params.overload_health_checkers,
                "retries": True,
                "verify": True,
                "seed": n,
                "probes": {name: p.asdict() for name, p in probes.items()},
            }
            out = runs.phase(stack, load_cpu, spec)
            record["levels"][str(n)] = m = level_record(out, probes)
            m["settled_s"] = quiet
            log(_line(n, m))
        record["foreign_cpu_max"] = max(float(m["foreign_cpu"]) for m in record["levels"].values())
    finally:
        stack.stop()
    results["overload"] = record
    results["duration_s"] = time.monotonic() - started
    results["machine"]["loadavg_after"] = host.loadavg()
    return results

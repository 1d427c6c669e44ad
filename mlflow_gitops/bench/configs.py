"""What the bench runs: its sizes (Params), the configurations it compares, and their settings.

Configurations (each on a fresh PostgreSQL and pod):

* `defaults`: `mlflow server` with only what running against the same PostgreSQL and artifact
  volume needs (DEFAULTS_ARGS below); the pod's environment (PG* connection variables, allowed
  hosts, secret key) is kept, MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set to MLflow's default
  ("true") and the pool variables to "0", which MLflow ignores (its defaults: 5 + 10 overflow).
* `shipped`: the render as is (rendered/homelab.yaml: what `make render` wrote from
  values/homelab.yaml).
* `previous`: the render at `--baseline` (git, default HEAD) when it differs from the working one.
* `wN jobs on|off`: the render with `--workers=N` (1, 2, 4) and MLFLOW_SERVER_ENABLE_JOB_EXECUTION
  replaced; everything else as rendered.

The overload phase (`overload`, overload.py) runs the render as is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_gitops import podrunner

ROOT = podrunner.ROOT
OUT = ROOT / "bench"
README = OUT / "README.md"
RENDER = podrunner.DEFAULT_RENDER
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
OVERLOAD = "overload"  # the name `--only` selects the overload phase by


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
    # The overload phase: closed-loop clients retrying as MLflow's client does, the kubelet's probes.
    overload_levels: tuple[int, ...] = (128, 256)
    overload_seconds: float = 120.0  # per level: 12 readiness and 4 liveness probes at 10 s / 30 s
    overload_drain_seconds: float = 600.0  # after it, for requests in flight and their retries
    overload_request_timeout: float = 120.0  # MLflow's client default (MLFLOW_HTTP_REQUEST_TIMEOUT)
    overload_health_timeout: float = 300.0  # long enough to see the real latency
    overload_health_checkers: int = 4  # sequential /health checkers, staggered (the kubelet has 2)


QUICK = Params(
    mix_seconds=4,
    throughput_seconds=3,
    max_requests=2000,
    artifact_mib=16,
    settle_seconds=1,
    overload_seconds=20,
    overload_drain_seconds=60,
)


@dataclass(frozen=True)
class Config:
    name: str
    render: Path
    workers: int | None = None  # None: as rendered
    jobs: bool | None = None  # None: as rendered
    args: tuple[str, ...] | None = None  # replaces the rendered args entirely
    env: Mapping[str, str] = field(default_factory=dict)
    arg_overrides: Mapping[str, str] = field(default_factory=dict)  # --NAME=VALUE replacing the rendered one
    note: str = ""


@dataclass(frozen=True)
class Targets:
    memory_bytes: int
    connections: int
    health_timeout_s: float
    errors_at: int


def with_arg(args: Sequence[str], name: str, value: str) -> list[str]:
    """The args with `--NAME=VALUE` replacing the rendered `--NAME...` (appended when absent)."""
    out = [a for a in args if a != f"--{name}" and not a.startswith(f"--{name}=")]
    return [*out, f"--{name}={value}"]


def with_workers(args: Sequence[str], workers: int) -> list[str]:
    """The args with `--workers=N` replacing the rendered one (appended when absent)."""
    return with_arg(args, "workers", str(workers))


def arg_value(argv: Sequence[str], name: str) -> str | None:
    for a in argv:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


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


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


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
        Config("shipped", render, note=f"{relative(render)} as is"),
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

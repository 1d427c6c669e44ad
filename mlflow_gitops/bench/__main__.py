"""`python -m mlflow_gitops.bench` (`make bench`): capacity of the rendered MLflow server on one CPU.

Its configurations against MLflow's own defaults, and the shipped settings under overload.

Writes bench/results.json and bench/results.png (the configurations, runs.py), bench/overload/
(the overload phase, overload.py) and the generated blocks of bench/README.md. `--only` runs a
subset (configuration names, and `overload` for the overload phase) and leaves the capacity block
alone; `--quick` runs short phases into a temporary directory and leaves bench/README.md alone.
`_load <spec>` is the load generator the phases run inside the pod (load.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow_gitops import podrunner
from mlflow_gitops.bench import report
from mlflow_gitops.bench.artifacts import run_artifacts
from mlflow_gitops.bench.configs import (
    OUT,
    OVERLOAD,
    QUICK,
    README,
    RENDER,
    Params,
    baseline_render,
    configurations,
)
from mlflow_gitops.bench.load import run_load
from mlflow_gitops.bench.overload import bench_overload
from mlflow_gitops.bench.runs import run_all


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mlflow_gitops.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    load = sub.add_parser("_load", help=argparse.SUPPRESS)
    load.add_argument("spec")
    p.add_argument("--quick", action="store_true", help="short phases, small artifact; no README update")
    p.add_argument(
        "--only", help=f"comma-separated configuration names and/or '{OVERLOAD}' (e.g. 'shipped,defaults')"
    )
    p.add_argument("--render", type=Path, default=RENDER)
    p.add_argument(
        "--baseline", default="HEAD", help="git revision whose render is row 'previous' ('' for none)"
    )
    p.add_argument(
        "--out", type=Path, help="directory for results.json/.png (default bench/, --quick: a temp dir)"
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--levels", help="concurrent clients of the mix, comma-separated (default 1,8,32)")
    p.add_argument("--overload-levels", help="concurrent clients of the overload phase (default 128,256)")
    p.add_argument(
        "--set-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add to every configuration's environment (exploration; implies --no-readme)",
    )
    p.add_argument(
        "--set-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="replace the server's --NAME in every configuration (exploration; implies --no-readme)",
    )
    p.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    p.add_argument(
        "--publish-only",
        action="store_true",
        help="rewrite charts and bench/README.md from the results.json files",
    )
    for f in dataclasses.fields(Params):
        if f.type in ("float", "int"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=float if f.type == "float" else int)
    return p


def params_of(args: argparse.Namespace) -> Params:
    params = QUICK if args.quick else Params()
    fields = dataclasses.fields(Params)
    params = dataclasses.replace(
        params, **{f.name: getattr(args, f.name) for f in fields if getattr(args, f.name, None) is not None}
    )
    if args.levels:
        params = dataclasses.replace(params, levels=tuple(int(n) for n in args.levels.split(",")))
    if args.overload_levels:
        params = dataclasses.replace(
            params, overload_levels=tuple(int(n) for n in args.overload_levels.split(","))
        )
    return params


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.cmd == "_load":
        spec = json.loads(args.spec)
        print(json.dumps(run_artifacts(spec) if spec["kind"] == "artifacts" else run_load(spec)))
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="mlflow-bench-")) if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    own = out.resolve() == OUT.resolve() and not (
        args.quick or args.no_readme or args.set_env or args.set_arg
    )
    readme = README if own and README.exists() else None
    if args.publish_only:
        if (out / "results.json").exists():
            print(report.publish(json.loads((out / "results.json").read_text()), out, readme))
        if (out / "overload" / "results.json").exists():
            data = json.loads((out / "overload" / "results.json").read_text())
            print(report.publish_overload(data, out / "overload", readme))
        return 0
    params = params_of(args)
    podrunner.preflight()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stack on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.sched_setaffinity(0, {args.load_cpu})
    render = args.render.resolve()
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    extra = dict(kv.split("=", 1) for kv in args.set_env)
    arg_overrides = dict(kv.lstrip("-").split("=", 1) for kv in args.set_arg)
    wrote = []
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-render-") as scratch:
        baseline = baseline_render(args.baseline, render, Path(scratch)) if args.baseline else None
        configs = [
            dataclasses.replace(c, env={**c.env, **extra}, arg_overrides=arg_overrides)
            for c in configurations(render, baseline)
        ]
        wanted = (
            [n.strip() for n in args.only.split(",")] if args.only else [c.name for c in configs] + [OVERLOAD]
        )
        known = [c.name for c in configs] + [OVERLOAD]
        if set(wanted) - set(known):
            p.error(f"unknown configurations {sorted(set(wanted) - set(known))}; known: {known}")
        configs = [c for c in configs if c.name in wanted]
        if configs:
            results = run_all(configs, params, render, args.server_cpu, args.load_cpu, args.quick, log)
            print(report.publish(results, out, None if args.only else readme))
            wrote.append(str(out / "results.json"))
        if OVERLOAD in wanted:
            results = bench_overload(
                render, params, args.server_cpu, args.load_cpu, args.quick, log, extra, arg_overrides
            )
            print(report.publish_overload(results, out / "overload", readme))
            wrote.append(str(out / "overload" / "results.json"))
    print(f"wrote {', '.join(wrote)}" + (f", {readme}" if readme else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except podrunner.PodRunnerError as err:
        sys.exit(f"bench: {err}")

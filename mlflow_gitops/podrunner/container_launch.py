"""Starting one container of the pod: its image, env and argv resolved as the kubelet does, then
launched by `_enter` in the pod's namespaces (the pause process's network, its own mount and PID)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow_gitops.podrunner.base import ROOT, Obj, PodRunnerError
from mlflow_gitops.podrunner.containers import enter_argv, enter_spec
from mlflow_gitops.podrunner.images import image_of
from mlflow_gitops.podrunner.kubelet_env import expand_argv
from mlflow_gitops.podrunner.processes import Proc, spawn, unused_name

if TYPE_CHECKING:
    from mlflow_gitops.podrunner.pod import PodRunner


def run_container(
    runner: PodRunner,
    c: Obj,
    where: str,
    volumes: Mapping[str, tuple[Path, bool]],
    *,
    main: bool = False,
    pod: Obj | None = None,
) -> Proc:
    """Start one container in the runner's pod; `pod` is the spec it belongs to (default: the
    Deployment's), whose securityContext applies. The main container gets the runner's `args` and
    `env_overrides` and becomes its server; every other one is stopped with the pod."""
    assert runner._pod_dir is not None, "no pod is running"
    pod = runner.pod if pod is None else pod
    image = image_of(c, where, runner.venv)
    env = runner.resolved_env(c, where, image, runner._hostname, pod)
    argv_src = dict(c)
    if main and runner.args is not None:
        argv_src["args"] = list(runner.args)
    if main:
        env |= dict(runner.env_overrides)
    argv = expand_argv(argv_src, env)
    if not argv:
        raise PodRunnerError(f"{where}.command: empty; the image's entrypoint is not known here")
    run = unused_name(runner._pod_dir / "ns", c["name"])  # a rerun gets its own scratch and log
    spec = enter_spec(c, where, volumes, pod, image, env, argv, runner._pod_dir, runner._pod_dir / "ns" / run)
    spec_file = runner._pod_dir / "ns" / f"{run}.json"
    spec_file.write_text(json.dumps(spec))
    spec_file.chmod(0o600)
    launcher = enter_argv(spec_file, runner.pod_netns, runner._pause.pid if runner._pause else 0)
    if runner.cpus:
        launcher = ["taskset", "-c", ",".join(map(str, runner.cpus)), *launcher]
    proc = spawn(
        run, launcher, runner._pod_dir / "logs" / f"{run}.log", stream=main and runner.stream_logs, cwd=ROOT
    )
    if main:
        runner.server_env, runner.server_argv = env, argv
    else:
        runner._containers.append(proc)
    return proc

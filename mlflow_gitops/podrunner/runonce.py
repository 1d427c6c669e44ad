"""Pods that run once beside the server: a `helm test` Pod, a CronJob's Job pod, a client's pod."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import TYPE_CHECKING

from mlflow_gitops.podrunner.base import Obj, PodRunnerError
from mlflow_gitops.podrunner.container_launch import run_container
from mlflow_gitops.podrunner.processes import unused_name
from mlflow_gitops.podrunner.volumes import materialize_volumes

if TYPE_CHECKING:
    from mlflow_gitops.podrunner.pod import PodRunner


def run_pod_spec(runner: PodRunner, where: str, spec: Obj, timeout: float = 300) -> tuple[int, str]:
    """Run a pod spec with `restartPolicy: Never` to completion beside the server, as the kubelet
    does: its init containers one after the other, each to exit 0 (the first that fails fails
    the pod), then its one container; its own volumes (the render's claims are the server's),
    env and securityContext, in this pod's network namespace, where the Services resolve and
    forward as in the cluster. `timeout` bounds the whole pod (activeDeadlineSeconds).
    Returns (exit code of the last container run, the containers' output in order).
    """
    if len(spec.get("containers", [])) != 1:
        raise PodRunnerError(f"{where}: only a single container is supported")
    if spec.get("restartPolicy", "Always") != "Never":
        raise PodRunnerError(f"{where}: only restartPolicy Never is supported (run once, not restarted)")
    assert runner._pod_dir is not None, "no pod is running"
    label = where.split()[-1].replace("/", "-")
    base = runner._pod_dir / "test-pods" / unused_name(runner._pod_dir / "test-pods", label)
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    volumes = materialize_volumes(spec, runner.render, runner.store, base, fs_group, claims=runner.claims_dir)
    deadline = time.monotonic() + timeout
    steps = [
        *(
            (c, f"{where}.spec.initContainers[{i}] ({c['name']})")
            for i, c in enumerate(spec.get("initContainers", []))
        ),
        (spec["containers"][0], f"{where}.spec.containers[0] ({spec['containers'][0]['name']})"),
    ]
    output = []
    code = 0
    for container, what in steps:
        proc = run_container(runner, container, what, volumes, pod=spec)
        try:
            code = proc.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.stop(signal.SIGKILL, 1)
            raise PodRunnerError(f"{what}: still running after {timeout:.0f} s:\n{proc.log_tail()}") from None
        output.append(proc.log.read_text(errors="replace") if proc.log else "")
        if code != 0:
            break
    return code, "".join(output)

"""`helm install` of the chart with the homelab's values on the node, then `helm test`.

The real CloudNativePG operator (mlflow_gitops.node.operator) reconciles the chart's Cluster on
the `longhorn` class, the server runs from the locally built image under the render's reference
with the artifacts on `nfs-slow` (mlflow_gitops.node.homelab, render_images). Only what a lab
cannot have is overridden, each override listed with its reason in tests/node/lab-overrides.yaml;
the Secrets External Secrets would write are created by the test with random values.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlflow_gitops import chart
from mlflow_gitops.node import api, build, homelab, operator, render_images
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node.conftest import SUMMARY
from tests.support.ci import unavailable

pytestmark = pytest.mark.node

RELEASE = "mlflow"
OVERRIDES = Path(__file__).with_name("lab-overrides.yaml")
CLUSTERS = f"/apis/postgresql.cnpg.io/v1/namespaces/{NAMESPACE}/clusters"


def timed(step: str, action) -> Any:
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"helm: {step}: {time.monotonic() - started:.1f} s")
    return result


def helm(node: Node, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """bin/helm inside the node's network namespace, as the node's admin, its state in the run dir."""
    home = node.run_dir / "helm"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(node.layout.kubeconfig("admin")),
    }
    cmd = [*node.netns.enter(), str(build.BIN / "helm"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def cluster_ready(client: api.Client, name: str) -> tuple[bool, str]:
    status = client.get(f"{CLUSTERS}/{name}").get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return conditions.get("Ready") == "True", f"phase {status.get('phase')!r} {conditions}"


def deployment_ready(client: api.Client, name: str) -> tuple[bool, str]:
    body = client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
    status = body.get("status", {})
    return status.get("readyReplicas", 0) >= body["spec"]["replicas"], f"status {status}"


def pods(client: api.Client) -> list[str]:
    """`name phase restarts=N` of each pod in the release's namespace."""
    out = []
    for pod in client.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]:
        statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get("containerStatuses", [])
        restarts = ", ".join(f"{s['name']}={s['restartCount']}" for s in statuses)
        out.append(f"{pod['metadata']['name']} {pod['status'].get('phase')} restarts: {restarts}")
    return out


def events(client: api.Client) -> str:
    items = client.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
    return "\n".join(
        f"{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}" for e in items[-25:]
    )


def test_helm_install_of_the_homelab_values_becomes_ready_and_passes_helm_test(node: Node) -> None:
    if not (chart.CHART / "charts" / "mlflow").is_dir():
        unavailable("the upstream mlflow chart is not in charts/mlflow-stack/charts/ (run `make deps`)")
    client, render = node.client, Render.load(homelab.RENDER)
    images = timed("operator images", lambda: operator.import_images(node.layout.containerd_socket))
    SUMMARY.extend(f"helm: image {ref}: {size}" for ref, size in images.items())
    for step, seconds in operator.install(client, operator.postgres_image()).items():
        SUMMARY.append(f"helm: {step}: {seconds:.1f} s")
    homelab.create_storage(client, node.run_dir)
    client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for line in homelab.create_secrets(client, NAMESPACE):
        print(line)
        SUMMARY.append(f"helm: {line}")
    overrides = yaml.safe_load(OVERRIDES.read_text())
    SUMMARY.append(f"helm: overrides ({OVERRIDES.name}): {sorted(overrides)}")

    values = [f"--values={chart.VALUES / 'homelab.yaml'}", f"--values={OVERRIDES}"]
    done = timed(
        "helm install",
        lambda: helm(node, "install", RELEASE, str(chart.CHART), f"--namespace={NAMESPACE}", *values),
    )
    assert done.returncode == 0, f"helm install exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    cluster = homelab.values()["postgres"].get("name", "mlflow-postgres")
    try:
        timed(
            "Cluster Ready",
            lambda: api.wait_for(f"Cluster {cluster} Ready", lambda: cluster_ready(client, cluster), 900, 3),
        )
        timed(
            "MLflow Deployment ready",
            lambda: api.wait_for("MLflow ready", lambda: deployment_ready(client, RELEASE), 600, 3),
        )
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{chr(10).join(pods(client))}\n{events(client)}") from error
    server = client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}")["spec"]["template"][
        "spec"
    ]
    assert server["containers"][0]["image"].endswith(
        render_images.reference("mlflow").removeprefix("docker.io/")
    )

    # --logs: helm reads the test pod's output through the API server's pods/log.
    done = timed(
        "helm test",
        lambda: helm(node, "test", RELEASE, f"--namespace={NAMESPACE}", "--logs", timeout=600),
    )
    assert done.returncode == 0, (
        f"helm test exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n{events(client)}"
    )
    suite = render.one("Pod")["metadata"]["name"]
    assert re.search(rf"TEST SUITE:\s+{suite}\n(.+\n)*?Phase:\s+Succeeded", done.stdout), done.stdout
    ok = re.search(r"^OK: run \w+ in experiment.*$", done.stdout, re.MULTILINE)
    assert ok, done.stdout
    SUMMARY.append(f"helm: test: {suite} Succeeded: {ok.group(0)}")

    # The gc CronJob's Job, now, as `kubectl create job --from=cronjob/...` makes it: the busybox
    # init container and `mlflow gc` against the Cluster and through the Service.
    cronjob = render.one("CronJob")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{cronjob['metadata']['name']}-now", "namespace": NAMESPACE},
        "spec": cronjob["spec"]["jobTemplate"]["spec"],
    }
    client.apply(job)
    try:
        timed("gc Job complete", lambda: api.wait_for("gc Job", lambda: job_finished(client, job), 600, 2))
    finally:
        SUMMARY.extend(f"helm: pod {line}" for line in pods(client))
    assert job_finished(client, job)[1].startswith("Complete"), (
        f"{job_finished(client, job)}\n{events(client)}"
    )
    # The server and PostgreSQL ran through it all without a restart (init containers may retry).
    restarted = {
        f"{pod['metadata']['name']}/{status['name']}": status["restartCount"]
        for pod in client.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
        for status in pod["status"].get("containerStatuses", [])
        if status["restartCount"]
    }
    assert not restarted, restarted


def job_finished(client: api.Client, job: dict[str, Any]) -> tuple[bool, str]:
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job['metadata']['name']}"
    conditions = {c["type"]: c["status"] for c in client.get(path).get("status", {}).get("conditions", [])}
    done = [kind for kind in ("Complete", "Failed") if conditions.get(kind) == "True"]
    return bool(done), f"{done[0] if done else 'running'} {conditions}"

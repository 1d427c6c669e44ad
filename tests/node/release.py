"""The homelab release on the one-node cluster, for tests/node/test_helm_install.py: `helm` inside
the node's network namespace, the install itself, the waits on its objects, and the client pod of
the lifecycle (tests/node/lifecycle_client.py) in another namespace the chart's NetworkPolicy admits.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1Pod,
)

from mlflow_gitops import chart
from mlflow_gitops.node import api, build, homelab, operator
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import kube
from tests.node.conftest import SUMMARY

RELEASE = "mlflow"
OVERRIDES = Path(__file__).with_name("lab-overrides.yaml")
CLIENT_SCRIPT = Path(__file__).with_name("lifecycle_client.py")
CLIENT_NAMESPACE = "mlflow-lifecycle-client"
CLUSTERS = ("postgresql.cnpg.io", "v1", NAMESPACE, "clusters")  # for CustomObjectsApi
VALUES = [f"--values={chart.VALUES / 'homelab.yaml'}", f"--values={OVERRIDES}"]


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


def cluster_name() -> str:
    return homelab.render().one("Cluster")["metadata"]["name"]


def cluster(client: ApiClient, name: str) -> dict[str, Any]:
    """The CloudNativePG Cluster as stored (a custom object: a dict)."""
    return CustomObjectsApi(client).get_namespaced_custom_object(*CLUSTERS, name)


def cluster_ready(client: ApiClient, name: str) -> tuple[bool, str]:
    status = cluster(client, name).get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return conditions.get("Ready") == "True", f"phase {status.get('phase')!r} {conditions}"


def deployment_ready(client: ApiClient, name: str) -> tuple[bool, str]:
    found = AppsV1Api(client).read_namespaced_deployment(name, NAMESPACE)
    return (found.status.ready_replicas or 0) >= found.spec.replicas, f"status {found.status}"


def pods(client: ApiClient) -> list[str]:
    """`name phase restarts: container=N, ...` of each pod in the release's namespace."""
    out = []
    for pod in CoreV1Api(client).list_namespaced_pod(NAMESPACE).items:
        statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
        restarts = ", ".join(f"{s.name}={s.restart_count}" for s in statuses)
        out.append(f"{pod.metadata.name} {pod.status.phase} restarts: {restarts}")
    return out


def events(client: ApiClient, namespace: str = NAMESPACE) -> str:
    items = CoreV1Api(client).list_namespaced_event(namespace).items
    return "\n".join(f"{e.involved_object.name}: {e.reason}: {e.message or ''}" for e in items[-25:])


def unready_logs(client: ApiClient, lines: int = 12) -> str:
    """The last lines of each container's log in the pods of the release's namespace not Ready."""
    core, out = CoreV1Api(client), []
    for pod in core.list_namespaced_pod(NAMESPACE).items:
        if kube.ready(pod):
            continue
        for container in (pod.spec.init_containers or []) + pod.spec.containers:
            try:
                log = core.read_namespaced_pod_log(
                    pod.metadata.name, NAMESPACE, container=container.name, tail_lines=lines
                )
            except ApiException as error:
                log = f"(pods/log: {api.message(error)})"
            out.append(f"--- {pod.metadata.name}/{container.name}:\n{log.rstrip()}")
    return "\n".join(out)


def cnpg_jobs(client: ApiClient) -> dict[str, dict[str, Any]]:
    """CloudNativePG's Jobs for the Cluster (`<cluster>-<serial>-<role>`) by role, from the job
    controller's events, as CloudNativePG deletes a completed Job once the Cluster is healthy: the
    pods it created, whether it completed, its first event's time."""
    prefix = f"{cluster_name()}-"
    found: dict[str, dict[str, Any]] = {}
    for event in CoreV1Api(client).list_namespaced_event(NAMESPACE).items:
        job = event.involved_object
        if job.kind != "Job" or not job.name.startswith(prefix):
            continue
        role = job.name.removeprefix(prefix).split("-", 1)[-1]
        seen = found.setdefault(role, {"name": job.name, "pods": [], "completed": False, "first": None})
        if event.reason == "SuccessfulCreate":
            seen["pods"].append((event.message or "").removeprefix("Created pod: "))
        seen["completed"] = seen["completed"] or event.reason == "Completed"
        when = event.first_timestamp or event.metadata.creation_timestamp
        seen["first"] = min(seen["first"] or when, when)
    return found


def details(client: ApiClient) -> str:
    """The namespace's pods, its last events and the logs of the pods not Ready, for a failure."""
    return f"{chr(10).join(pods(client))}\n{events(client)}\n{unready_logs(client)}"


def job_finished(client: ApiClient, name: str) -> tuple[bool, str]:
    status = BatchV1Api(client).read_namespaced_job_status(name, NAMESPACE).status
    conditions = {c.type: c.status for c in status.conditions or []}
    done = [kind for kind in ("Complete", "Failed") if conditions.get(kind) == "True"]
    return bool(done), f"{done[0] if done else 'running'} {conditions}"


def ready_pods(client: ApiClient, selector: str) -> list[V1Pod]:
    """The Ready, not terminating pods of the release's namespace matching a label selector."""
    found = CoreV1Api(client).list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return [pod for pod in found if not pod.metadata.deletion_timestamp and kube.ready(pod)]


def install(node: Node) -> None:
    """The operator, storage, the Secrets External Secrets would write, `helm install`, then the
    Cluster and the server Ready; each step's duration in the summary."""
    client = node.client
    images = timed("operator images", lambda: operator.import_images(node.layout.containerd_socket))
    SUMMARY.extend(f"helm: image {ref}: {size}" for ref, size in images.items())
    for step, seconds in operator.install(client, operator.postgres_image()).items():
        SUMMARY.append(f"helm: {step}: {seconds:.1f} s")
    homelab.create_storage(client, node.run_dir)
    api.create_or_keep(lambda: CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}}))
    for line in homelab.create_secrets(client, NAMESPACE):
        print(line)
        SUMMARY.append(f"helm: {line}")
    overrides = yaml.safe_load(OVERRIDES.read_text())
    SUMMARY.append(f"helm: overrides ({OVERRIDES.name}): {sorted(overrides)}")
    done = timed(
        "helm install",
        lambda: helm(node, "install", RELEASE, str(chart.CHART), f"--namespace={NAMESPACE}", *VALUES),
    )
    assert done.returncode == 0, f"helm install exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    cluster = cluster_name()
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
        raise AssertionError(f"{error}\n{details(client)}") from error


def remove(node: Node) -> None:
    """Uninstall (if still installed) and delete the release's and the client's namespaces, kept
    objects included, so later modules start from an empty `mlflow` namespace."""
    core = CoreV1Api(node.client)
    helm(node, "uninstall", RELEASE, f"--namespace={NAMESPACE}", timeout=300)
    for name in (CLIENT_NAMESPACE, NAMESPACE):
        kube.absent(lambda name=name: core.delete_namespace(name))
    for name in (CLIENT_NAMESPACE, NAMESPACE):
        kube.wait_deleted(f"namespace {name}", lambda name=name: core.read_namespace(name), 600, 2)


# --- the client in another namespace -------------------------------------------------------------


def client_namespace(client: ApiClient) -> dict[str, str]:
    """The client's namespace, labelled as values/homelab.yaml's networkPolicy.clients admits."""
    labels = homelab.values()["networkPolicy"]["clients"]["namespaceSelector"]["matchLabels"]
    kube.namespace(client, CLIENT_NAMESPACE, labels)
    return labels


def tracking_uri(render: Render) -> str:
    """http://<Service>.<namespace>.svc.cluster.local:<port>, the Service and its port from the render."""
    service = next(s for s in render.find("Service") if s["metadata"]["name"] == RELEASE)
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    return f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:{port}"


def run_client(client: ApiClient, render: Render, name: str, env: dict[str, str]) -> dict[str, Any]:
    """Run tests/node/lifecycle_client.py in a pod of the render's MLflow image and security
    context (its helm-test pod's) in the client namespace; returns the script's RESULT."""
    pod = copy.deepcopy(render.one("Pod"))
    pod["metadata"] = {
        "name": name,
        "namespace": CLIENT_NAMESPACE,
        "labels": {"app": "mlflow-lifecycle-client"},
    }
    spec = pod["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if "configMap" not in v]
    container = spec["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    container["command"] = ["python", "-c", CLIENT_SCRIPT.read_text()]
    container["env"] = [
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_uri(render)},
        {"name": "HOME", "value": "/tmp"},
        *({"name": k, "value": v} for k, v in env.items()),
    ]
    core = CoreV1Api(client)
    core.create_namespaced_pod(CLIENT_NAMESPACE, pod)
    try:
        phase = kube.finished_pod(client, CLIENT_NAMESPACE, name, 600).status.phase
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{events(client, CLIENT_NAMESPACE)}") from error
    log = core.read_namespaced_pod_log(name, CLIENT_NAMESPACE)
    assert phase == "Succeeded", f"client pod {name} {phase}:\n{log}"
    results = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, f"client pod {name} printed no RESULT line:\n{log}"
    return json.loads(results[0].removeprefix("RESULT "))

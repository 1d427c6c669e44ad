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

from mlflow_gitops import chart
from mlflow_gitops.node import api, build, homelab, operator
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node.conftest import SUMMARY

RELEASE = "mlflow"
OVERRIDES = Path(__file__).with_name("lab-overrides.yaml")
CLIENT_SCRIPT = Path(__file__).with_name("lifecycle_client.py")
CLIENT_NAMESPACE = "mlflow-lifecycle-client"
CLUSTERS = f"/apis/postgresql.cnpg.io/v1/namespaces/{NAMESPACE}/clusters"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
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
    for pod in client.get(PODS)["items"]:
        statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get("containerStatuses", [])
        restarts = ", ".join(f"{s['name']}={s['restartCount']}" for s in statuses)
        out.append(f"{pod['metadata']['name']} {pod['status'].get('phase')} restarts: {restarts}")
    return out


def events(client: api.Client, namespace: str = NAMESPACE) -> str:
    items = client.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return "\n".join(
        f"{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}" for e in items[-25:]
    )


def unready_logs(client: api.Client, lines: int = 12) -> str:
    """The last lines of each container's log in the pods of the release's namespace not Ready."""
    out = []
    for pod in client.get(PODS)["items"]:
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])):
            continue
        name = pod["metadata"]["name"]
        for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            query = f"container={container['name']}&tailLines={lines}"
            status, log = client.request("GET", f"{PODS}/{name}/log?{query}")
            out.append(f"--- {name}/{container['name']} (pods/log {status}):\n{str(log).rstrip()}")
    return "\n".join(out)


def cnpg_jobs(client: api.Client) -> dict[str, dict[str, Any]]:
    """CloudNativePG's Jobs for the Cluster (`<cluster>-<serial>-<role>`) by role, from the job
    controller's events, as CloudNativePG deletes a completed Job once the Cluster is healthy: the
    pods it created, whether it completed, its first event's time."""
    prefix = f"{cluster_name()}-"
    found: dict[str, dict[str, Any]] = {}
    for event in client.get(f"/api/v1/namespaces/{NAMESPACE}/events")["items"]:
        job = event["involvedObject"]
        if job.get("kind") != "Job" or not job["name"].startswith(prefix):
            continue
        role = job["name"].removeprefix(prefix).split("-", 1)[-1]
        seen = found.setdefault(role, {"name": job["name"], "pods": [], "completed": False, "first": ""})
        if event["reason"] == "SuccessfulCreate":
            seen["pods"].append(event.get("message", "").removeprefix("Created pod: "))
        seen["completed"] = seen["completed"] or event["reason"] == "Completed"
        when = event.get("firstTimestamp") or event["metadata"]["creationTimestamp"]
        seen["first"] = min(seen["first"] or when, when)
    return found


def details(client: api.Client) -> str:
    """The namespace's pods, its last events and the logs of the pods not Ready, for a failure."""
    return f"{chr(10).join(pods(client))}\n{events(client)}\n{unready_logs(client)}"


def job_finished(client: api.Client, job: dict[str, Any]) -> tuple[bool, str]:
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job['metadata']['name']}"
    conditions = {c["type"]: c["status"] for c in client.get(path).get("status", {}).get("conditions", [])}
    done = [kind for kind in ("Complete", "Failed") if conditions.get(kind) == "True"]
    return bool(done), f"{done[0] if done else 'running'} {conditions}"


def ready_pods(client: api.Client, selector: str) -> list[dict[str, Any]]:
    """The Ready, not terminating pods of the release's namespace matching a label selector."""
    found = client.get(f"{PODS}?labelSelector={selector}")["items"]
    return [
        pod
        for pod in found
        if not pod["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


def install(node: Node) -> None:
    """The operator, storage, the Secrets External Secrets would write, `helm install`, then the
    Cluster and the server Ready; each step's duration in the summary."""
    client = node.client
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
    client = node.client
    helm(node, "uninstall", RELEASE, f"--namespace={NAMESPACE}", timeout=300)
    for name in (CLIENT_NAMESPACE, NAMESPACE):
        client.delete(f"/api/v1/namespaces/{name}")
    for name in (CLIENT_NAMESPACE, NAMESPACE):

        def gone(name: str = name) -> tuple[bool, str]:
            status, body = client.request("GET", f"/api/v1/namespaces/{name}")
            return status == 404, f"GET namespace {name}: {status} {str(body.get('status', body))[:300]}"

        api.wait_for(f"namespace {name} deleted", gone, 600, 2)


# --- the client in another namespace -------------------------------------------------------------


def client_namespace(client: api.Client) -> dict[str, str]:
    """The client's namespace, labelled as values/homelab.yaml's networkPolicy.clients admits."""
    labels = homelab.values()["networkPolicy"]["clients"]["namespaceSelector"]["matchLabels"]
    namespace(client, CLIENT_NAMESPACE, labels)
    return labels


def namespace(client: api.Client, name: str, labels: dict[str, str] | None = None) -> None:
    """A namespace, once its default ServiceAccount exists (pods are refused until then)."""
    client.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    )

    def service_account() -> tuple[bool, str]:
        status, _ = client.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
        return status == 200, f"GET serviceaccount default: {status}"

    api.wait_for(f"ServiceAccount default in {name}", service_account, 120)


def tracking_uri(render: Render) -> str:
    """http://<Service>.<namespace>.svc.cluster.local:<port>, the Service and its port from the render."""
    service = next(s for s in render.find("Service") if s["metadata"]["name"] == RELEASE)
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    return f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:{port}"


def run_client(client: api.Client, render: Render, name: str, env: dict[str, str]) -> dict[str, Any]:
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
    client.create(pod)
    path = f"/api/v1/namespaces/{CLIENT_NAMESPACE}/pods/{name}"

    def finished() -> tuple[bool, str]:
        phase = client.get(path).get("status", {}).get("phase")
        return phase in ("Succeeded", "Failed"), f"phase {phase}"

    try:
        api.wait_for(f"client pod {name} finished", finished, 600, 2)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{events(client, CLIENT_NAMESPACE)}") from error
    status, log = client.request("GET", f"{path}/log")
    phase = client.get(path)["status"]["phase"]
    assert phase == "Succeeded" and status == 200, f"client pod {name} {phase}; pods/log {status}:\n{log}"
    results = [line for line in str(log).splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, f"client pod {name} printed no RESULT line:\n{log}"
    return json.loads(results[0].removeprefix("RESULT "))

"""`helm install` of the chart with the homelab's values on the node, `helm test`, and the rest of the
release's life: a client in another namespace, `helm upgrade`, losing the server pod, losing the
PostgreSQL pod, `helm uninstall`.

The real CloudNativePG operator (mlflow_gitops.node.operator) reconciles the chart's Cluster on
the `longhorn` class, the server runs from the locally built image under the render's reference
with the artifacts on `nfs-slow` (mlflow_gitops.node.homelab, render_images). Only what a lab
cannot have is overridden, each override listed with its reason in tests/node/lab-overrides.yaml;
the Secrets External Secrets would write are created by the test with random values. The release
is installed once for the module (tests/node/release.py); the tests run in order, each a step of
its life, and each step's duration goes to the node summary.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, AppsV1Api, BatchV1Api, CoreV1Api, V1Pod

from mlflow_gitops import chart
from mlflow_gitops.node import api, homelab, render_images
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import kube, release
from tests.node.conftest import SUMMARY
from tests.node.release import RELEASE, helm, timed

pytestmark = [pytest.mark.node, pytest.mark.upstream]

# The value `helm upgrade` changes: a pod annotation of the server, harmless and visible on the pod.
UPGRADE_ANNOTATION = "node-test.mlflow.daviestechlabs.io/upgrade"


@pytest.fixture(scope="module")
def installed(node: Node) -> Iterator[Render]:
    try:
        release.install(node)
        yield Render.load(homelab.RENDER)
    finally:
        release.remove(node)


@pytest.fixture(scope="module")
def written() -> dict[str, Any]:
    """What the client wrote in the first lifecycle step, for the later ones to read back."""
    return {}


def server_selector(client: ApiClient) -> str:
    """The label selector of the server Deployment's pods."""
    labels = AppsV1Api(client).read_namespaced_deployment(RELEASE, NAMESPACE).spec.selector.match_labels
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def server_pod(client: ApiClient) -> V1Pod:
    (pod,) = release.ready_pods(client, server_selector(client))
    return pod


def restarts(pod: V1Pod) -> dict[str, int]:
    return {s.name: s.restart_count for s in pod.status.container_statuses or []}


def new_ready_pod(client: ApiClient, selector: str, old_uid: str, what: str, timeout: float = 600) -> V1Pod:
    def replaced() -> tuple[bool, str]:
        found = [p for p in release.ready_pods(client, selector) if p.metadata.uid != old_uid]
        return len(found) == 1, f"{len(found)} new Ready pods; {release.pods(client)}"

    try:
        api.wait_for(what, replaced, timeout, 2)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{release.events(client)}") from error
    (pod,) = [p for p in release.ready_pods(client, selector) if p.metadata.uid != old_uid]
    return pod


def read_back(client: ApiClient, render: Render, name: str, written: dict[str, Any]) -> None:
    """A new client pod reads the run, its artifact and the model version; all as written."""
    assert written, "the first lifecycle step wrote nothing to read back"
    env = {"LIFECYCLE_MODE": "read", "RUN_ID": written["run_id"], "MODEL_VERSION": written["version"]}
    found = timed(f"lifecycle: {name} read back", lambda: release.run_client(client, render, name, env))
    expected = {k: written[k] for k in ("run_id", "value", "sha256", "model", "version", "source")}
    assert {k: found[k] for k in expected} == expected, f"read back {found}, wrote {written}"
    assert (found["model_run_id"], found["status"]) == (written["run_id"], "READY"), found


def test_helm_install_of_the_homelab_values_becomes_ready_and_passes_helm_test(
    node: Node, installed: Render
) -> None:
    client, render = node.client, installed
    server = AppsV1Api(client).read_namespaced_deployment(RELEASE, NAMESPACE).spec.template.spec
    assert server.containers[0].image.endswith(render_images.reference("mlflow").removeprefix("docker.io/"))
    # --logs: helm reads the test pod's output through the API server's pods/log.
    done = timed(
        "helm test",
        lambda: helm(node, "test", RELEASE, f"--namespace={NAMESPACE}", "--logs", timeout=600),
    )
    assert done.returncode == 0, (
        f"helm test exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n{release.events(client)}"
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
    BatchV1Api(client).create_namespaced_job(NAMESPACE, job)
    job_name = job["metadata"]["name"]
    try:
        timed(
            "gc Job complete",
            lambda: api.wait_for("gc Job", lambda: release.job_finished(client, job_name), 600, 2),
        )
    finally:
        SUMMARY.extend(f"helm: pod {line}" for line in release.pods(client))
    assert release.job_finished(client, job_name)[1].startswith("Complete"), (
        f"{release.job_finished(client, job_name)}\n{release.events(client)}"
    )
    # The server and PostgreSQL ran through it all without a restart (init containers may retry).
    restarted = {
        f"{pod.metadata.name}/{name}": count
        for pod in CoreV1Api(client).list_namespaced_pod(NAMESPACE).items
        for name, count in restarts(pod).items()
        if count
    }
    assert not restarted, restarted


def test_a_client_in_a_namespace_the_policy_admits_logs_a_run_and_registers_a_model_through_the_service_name(
    node: Node, installed: Render, written: dict[str, Any]
) -> None:
    client = node.client
    labels = release.client_namespace(client)
    SUMMARY.append(
        f"helm: lifecycle: client namespace {release.CLIENT_NAMESPACE} labelled {labels}, "
        f"tracking URI {release.tracking_uri(installed)}"
    )
    env = {"LIFECYCLE_MODE": "write"}
    result = timed(
        "lifecycle: client logs a run and registers a model",
        lambda: release.run_client(client, installed, "lifecycle-write", env),
    )
    assert result["source"].startswith("mlflow-artifacts:/"), f"artifacts are not proxied: {result}"
    written.update(result)
    SUMMARY.append(f"helm: lifecycle: run {result['run_id']}, {result['model']} version {result['version']}")
    read_back(client, installed, "lifecycle-read-installed", written)


def test_helm_upgrade_with_a_changed_pod_annotation_recreates_the_server_and_keeps_runs_and_models(
    node: Node, installed: Render, written: dict[str, Any]
) -> None:
    client = node.client
    assert AppsV1Api(client).read_namespaced_deployment(RELEASE, NAMESPACE).spec.strategy.type == "Recreate"
    old = server_pod(client)
    upgrade = node.run_dir / "upgrade-values.yaml"
    upgrade.write_text(yaml.safe_dump({"mlflow": {"podAnnotations": {UPGRADE_ANNOTATION: "2"}}}))
    args = ["upgrade", RELEASE, str(chart.CHART), f"--namespace={NAMESPACE}", *release.VALUES]
    done = timed("lifecycle: helm upgrade", lambda: helm(node, *args, f"--values={upgrade}"))
    assert done.returncode == 0, f"helm upgrade exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"REVISION: 2\b", done.stdout), done.stdout
    pod = timed(
        "lifecycle: upgraded server pod Ready",
        lambda: new_ready_pod(client, server_selector(client), old.metadata.uid, "upgraded server Ready"),
    )
    assert (pod.metadata.annotations or {}).get(UPGRADE_ANNOTATION) == "2", pod.metadata
    SUMMARY.append(f"helm: lifecycle: upgrade changed mlflow.podAnnotations.{UPGRADE_ANNOTATION}")
    read_back(client, installed, "lifecycle-read-upgraded", written)


def test_a_deleted_server_pod_comes_back_with_the_runs_and_models_intact(
    node: Node, installed: Render, written: dict[str, Any]
) -> None:
    client = node.client
    old = server_pod(client)
    CoreV1Api(client).delete_namespaced_pod(old.metadata.name, NAMESPACE)
    timed(
        "lifecycle: deleted server pod replaced and Ready",
        lambda: new_ready_pod(client, server_selector(client), old.metadata.uid, "new server Ready"),
    )
    read_back(client, installed, "lifecycle-read-server-replaced", written)


def test_a_deleted_postgresql_pod_is_recreated_by_the_operator_and_the_server_recovers_without_a_restart(
    node: Node, installed: Render, written: dict[str, Any]
) -> None:
    client, cluster = node.client, release.cluster_name()
    server = server_pod(client)
    selector = f"cnpg.io/cluster={cluster},!cnpg.io/jobRole"
    (instance,) = release.ready_pods(client, selector)
    # A plain delete: the instance manager shuts PostgreSQL down smartly, waiting for the server's
    # pooled connections up to CloudNativePG's smartShutdownTimeout (180 s by default) before a
    # fast shutdown; the operator then recreates the pod on the same claim.
    CoreV1Api(client).delete_namespaced_pod(instance.metadata.name, NAMESPACE)
    new = timed(
        "lifecycle: PostgreSQL pod recreated and Ready",
        lambda: new_ready_pod(client, selector, instance.metadata.uid, "new PostgreSQL instance Ready"),
    )
    timed(
        "lifecycle: Cluster Ready again",
        lambda: api.wait_for(
            f"Cluster {cluster} Ready", lambda: release.cluster_ready(client, cluster), 600, 2
        ),
    )
    SUMMARY.append(f"helm: lifecycle: instance {instance.metadata.name} recreated as {new.metadata.name}")
    read_back(client, installed, "lifecycle-read-postgres-replaced", written)
    after = server_pod(client)
    assert after.metadata.uid == server.metadata.uid, "the server pod was replaced"
    assert restarts(after) == restarts(server), (
        f"the server restarted: {restarts(server)} -> {restarts(after)}"
    )


def test_helm_uninstall_keeps_the_cluster_and_the_artifact_claim_and_removes_the_server(
    node: Node, installed: Render
) -> None:
    client, cluster = node.client, release.cluster_name()
    done = timed(
        "lifecycle: helm uninstall",
        lambda: helm(node, "uninstall", RELEASE, f"--namespace={NAMESPACE}", "--wait", timeout=600),
    )
    assert done.returncode == 0, f"helm uninstall exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    core, claim = CoreV1Api(client), installed.one("PersistentVolumeClaim")["metadata"]["name"]
    kept = {
        f"Cluster/{cluster}": release.cluster(client, cluster)["metadata"].get("deletionTimestamp"),
        f"PersistentVolumeClaim/{claim}": core.read_namespaced_persistent_volume_claim(
            claim, NAMESPACE
        ).metadata.deletion_timestamp,
    }
    assert not any(kept.values()), f"being deleted after helm uninstall: {kept}"
    assert kube.absent(lambda: AppsV1Api(client).read_namespaced_deployment(RELEASE, NAMESPACE)), (
        f"Deployment {RELEASE} is still there after helm uninstall"
    )
    assert kube.absent(lambda: core.read_namespaced_service(RELEASE, NAMESPACE)), (
        f"Service {RELEASE} is still there after helm uninstall"
    )
    SUMMARY.append(f"helm: lifecycle: uninstall kept {sorted(kept)}")

"""The render's MLflow server runs on the node from the locally built image, as rendered.

The homelab render's server Deployment (its image reference and pull policy, security contexts,
probes, env, the busybox remove-partial-uploads init container and the artifact claim on the
`nfs-slow` class), with two changes a node without the CloudNativePG operator needs: the backend
is SQLite on an emptyDir instead of the Cluster (so the migration init container, which only
migrates PostgreSQL, is left out). The render's own helm-test pod, run from another namespace,
logs a run with an artifact through the Service's DNS name and reads both back; the artifact lands
on the NFS-like volume owned by uid 1001 and the export's group 568.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CoreV1Api, V1Pod

from mlflow_gitops.node import api, build, homelab, render_images
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import kube
from tests.node.conftest import SUMMARY

pytestmark = pytest.mark.node

CLIENT_NAMESPACE = "mlflow-client"
SQLITE_DIR = "/mlflow/db"
STALE_UPLOAD = ".artifact.uploading.stale"  # what a server killed mid-upload leaves behind


def timed(step: str, action):
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"{step}: {time.monotonic() - started:.1f} s")
    return result


def create(client: api.NodeClient, obj: dict[str, Any], namespace: str) -> None:
    """A rendered object in `namespace` (server-side apply: the render's kinds, whichever they are)."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    api.apply(client, obj)


def server_deployment(render: Render) -> dict[str, Any]:
    """The rendered server Deployment, its backend SQLite on an emptyDir."""
    deployment = copy.deepcopy(render.one("Deployment"))
    spec = deployment["spec"]["template"]["spec"]
    spec["initContainers"] = [c for c in spec.get("initContainers", []) if c["name"] != "mlflow-db-migration"]
    container = spec["containers"][0]
    backend = [a for a in container["args"] if a.startswith("--backend-store-uri=")]
    assert backend == ["--backend-store-uri=postgresql+psycopg2://"], container["args"]
    container["args"] = [
        f"--backend-store-uri=sqlite:///{SQLITE_DIR}/mlflow.db" if a in backend else a
        for a in container["args"]
    ]
    container["volumeMounts"].append({"name": "sqlite", "mountPath": SQLITE_DIR})
    spec["volumes"].append({"name": "sqlite", "emptyDir": {}})
    return deployment


def server_pod(client: ApiClient) -> V1Pod | None:
    pods = CoreV1Api(client).list_namespaced_pod(NAMESPACE, label_selector="app=mlflow").items
    return pods[0] if pods else None


def describe(client: ApiClient, namespace: str) -> str:
    events = CoreV1Api(client).list_namespaced_event(namespace).items
    return "\n".join(f"{e.involved_object.name}: {e.reason}: {e.message or ''}" for e in events[-15:])


@pytest.fixture
def namespaces_removed_after(node: Node):
    """The test's namespaces are deleted afterwards (the chart's own install uses `mlflow` too)."""
    yield
    core = CoreV1Api(node.client)
    for name in (CLIENT_NAMESPACE, NAMESPACE):
        kube.absent(lambda name=name: core.delete_namespace(name))
    for name in (CLIENT_NAMESPACE, NAMESPACE):
        kube.wait_deleted(f"namespace {name}", lambda name=name: core.read_namespace(name), 300)


def test_render_images_are_imported_under_the_render_references(node: Node) -> None:
    render = Render.load(homelab.RENDER)
    rendered = {
        c["image"]
        for obj in render.objects
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    assert rendered, "the render has no Deployment containers"
    crictl = [str(build.BIN / "crictl"), f"--runtime-endpoint=unix://{node.layout.containerd_socket}"]
    listed = render_images.run(*node.netns.enter(), *crictl, "images", "-o", "json")
    tags = {tag for image in json.loads(listed)["images"] for tag in image.get("repoTags") or []}
    for name in render_images.IMAGES:
        reference = render_images.reference(name)
        assert reference in tags, f"{reference} is not among the node's images: {sorted(tags)}"
        record = json.loads(next(render_images.CACHE.glob(f"{name}-*.json")).read_text())
        SUMMARY.append(
            f"image {reference}: {record['tar_bytes'] / 2**20:.0f} MiB packed, "
            f"{record['rootfs_bytes'] / 2**20:.0f} MiB unpacked, cold build {record['built_seconds']:.0f} s"
        )
    labels = homelab.node_labels(node.client)
    assert labels.get("kubernetes.io/arch") == "amd64", labels
    assert homelab.unmatched_node_selector(node.client) == {}


def test_server_writes_artifacts_as_uid_1001_group_568_on_nfs_slow_and_a_client_in_another_namespace_reads_them_back(
    node: Node, namespaces_removed_after: None
) -> None:
    client, render = node.client, Render.load(homelab.RENDER)
    core = CoreV1Api(client)
    made = timed("storage classes and volumes", lambda: homelab.create_storage(client, node.run_dir))
    SUMMARY.append(f"storage: {', '.join(made)}")
    kube.namespace(client, NAMESPACE, {"purpose": "node-test"})
    for line in homelab.create_secrets(client, NAMESPACE):
        print(line)
        SUMMARY.append(line)
    for kind in ("ServiceAccount", "ConfigMap", "Secret", "Service"):
        for obj in render.find(kind):
            create(client, obj, NAMESPACE)

    claim = render.one("PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == homelab.storage_classes()[1].name
    create(client, claim, NAMESPACE)

    def bound() -> tuple[bool, str]:
        phase = core.read_namespaced_persistent_volume_claim_status(
            claim["metadata"]["name"], NAMESPACE
        ).status.phase
        return phase == "Bound", f"phase {phase}"

    timed("artifact claim Bound", lambda: api.wait_for("artifact claim Bound", bound, 120))
    bound_to = core.read_namespaced_persistent_volume_claim(
        claim["metadata"]["name"], NAMESPACE
    ).spec.volume_name
    export = Path(core.read_persistent_volume(bound_to).spec.host_path.path)
    stat = export.stat()
    assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o7777) == (0, homelab.nfs_group(), 0o2775)
    (export / STALE_UPLOAD).write_bytes(b"partial")

    deployment = server_deployment(render)
    create(client, deployment, NAMESPACE)

    def ready() -> tuple[bool, str]:
        pod = server_pod(client)
        if pod is None:
            return False, "no pod yet"
        return kube.ready(pod), kube.state(pod)

    try:
        timed("MLflow server pod Ready", lambda: api.wait_for("MLflow server Ready", ready, 600))
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{describe(client, NAMESPACE)}\n{node.tail('kubelet')}") from error
    pod = server_pod(client)
    assert pod is not None
    (status,) = pod.status.container_statuses
    rendered = render.one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert pod.spec.containers[0].image == rendered["image"]
    assert pod.spec.containers[0].image_pull_policy == rendered["imagePullPolicy"]
    assert status.image == render_images.reference("mlflow"), status
    assert status.restart_count == 0, status
    assert not (export / STALE_UPLOAD).exists(), "the busybox init container left the partial upload"

    # The render's helm-test pod and its script, from another namespace, through the Service's name.
    kube.namespace(client, CLIENT_NAMESPACE, {"purpose": "node-test"})
    smoke_pod = copy.deepcopy(render.one("Pod"))
    create(
        client,
        render.one("ConfigMap", smoke_pod["spec"]["volumes"][0]["configMap"]["name"]),
        CLIENT_NAMESPACE,
    )
    create(client, smoke_pod, CLIENT_NAMESPACE)
    name = smoke_pod["metadata"]["name"]
    try:
        smoke = timed(
            "client pod logged and read back a run",
            lambda: kube.finished_pod(client, CLIENT_NAMESPACE, name, 600),
        )
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{describe(client, CLIENT_NAMESPACE)}") from error
    message = core.read_namespaced_pod_log(name, CLIENT_NAMESPACE)  # pods/log: the kubelet's answer
    SUMMARY.append(f"client pod ({CLIENT_NAMESPACE}): {' '.join(message.strip().splitlines()[-1:])}")
    assert smoke.status.phase == "Succeeded", f"client pod {smoke.status.phase}: {message}"
    run_id = re.search(r"OK: run (\w+)", message)
    assert run_id, message

    (artifact,) = export.glob(f"*/{run_id.group(1)}/artifacts/smoke.bin")
    owners = {
        p.relative_to(export).as_posix(): (p.stat().st_uid, p.stat().st_gid)
        for p in (artifact, *artifact.parents)
        if export in p.parents
    }
    assert set(owners.values()) == {(1001, homelab.nfs_group())}, owners
    for directory in artifact.parents:
        if export in directory.parents:
            assert directory.stat().st_mode & 0o2000, f"{directory} lost the export's setgid bit"
    SUMMARY.append(
        f"artifact {artifact.relative_to(export)} on nfs-slow: uid/gid {owners[artifact.relative_to(export).as_posix()]}"
    )

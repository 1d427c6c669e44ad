"""The real CloudNativePG operator on the node: installed from its release manifest (CNPG_VERSION),
its webhook admitting and refusing Clusters, a one-instance Cluster reconciled to healthy on a
local volume, and a client in another namespace reaching it through the `-rw` Service's DNS name.

The images are built here (mlflow_gitops.node.cnpg_images): the operator from its Go module, the
operand from Debian's postgresql-15; the operator's configuration names the operand image, so the
Cluster carries no `imageName`, as the chart's does not. Run by `make node-test` (marked `node`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, ApiException, AppsV1Api, CoreV1Api, CustomObjectsApi, StorageV1Api

from mlflow_gitops.node import api, cnpg_images, config, operator
from mlflow_gitops.node.node import Node
from tests.node import kube
from tests.node.conftest import SUMMARY
from tests.support.ci import unavailable

pytestmark = pytest.mark.node

DB_NAMESPACE = "cnpg-db"
CLIENT_NAMESPACE = "cnpg-client"  # the client sits in another namespace than the Cluster
CLUSTER = "pg"
STORAGE_CLASS = "cnpg-local"
OWNER = "app"
MAX_CONNECTIONS = "200"
CNPG = ("postgresql.cnpg.io", "v1")


def timed(step: str, action: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"cnpg: {step}: {time.monotonic() - started:.1f} s")
    return result


def volume_path(run_dir: Path) -> Path:
    return run_dir / "volumes" / f"{CLUSTER}-1"


def local_volume(client: ApiClient, run_dir: Path) -> None:
    """A StorageClass without a provisioner and one static local PersistentVolume on the node,
    owned by PostgreSQL's uid/gid 26 as the instance pod runs."""
    path = volume_path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 26, 26)
    path.chmod(0o700)
    StorageV1Api(client).create_storage_class({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
    })  # fmt: skip
    CoreV1Api(client).create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{STORAGE_CLASS}-{CLUSTER}-1"},
        "spec": {
            "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": STORAGE_CLASS,
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [config.NODE_NAME]},
            ]}]}},
        },
    })  # fmt: skip


def cluster(parameters: dict[str, str], name: str = CLUSTER) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": DB_NAMESPACE},
        "spec": {
            "instances": 1,
            "storage": {"size": "1Gi", "storageClass": STORAGE_CLASS},
            "postgresql": {"parameters": parameters},
            "bootstrap": {
                "initdb": {"database": OWNER, "owner": OWNER, "secret": {"name": f"{OWNER}-owner"}}
            },
        },
    }


def owner_secret(namespace: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {"name": f"{OWNER}-owner", "namespace": namespace},
        "stringData": {"username": OWNER, "password": password},
    }


@pytest.fixture(scope="module")
def cnpg(node: Node) -> Iterator[dict[str, str]]:
    """The operator installed, Available and its webhook serving; returns the images' sizes."""
    if missing := operator.missing():
        unavailable(f"needs {', '.join(missing)}: run `make node-build`")
    sizes = timed("images built and imported", lambda: operator.import_images(node.layout.containerd_socket))
    SUMMARY.extend(f"cnpg: image {ref}: {size}" for ref, size in sizes.items())
    _, changes = operator.overrides(operator.postgres_image())
    SUMMARY.extend(f"cnpg: manifest override: {change}" for change in changes)
    timings = operator.install(node.client, operator.postgres_image())
    SUMMARY.extend(f"cnpg: {step}: {seconds:.1f} s" for step, seconds in timings.items())
    kube.namespace(node.client, DB_NAMESPACE)
    yield sizes
    timed("Cluster deleted, its volume removed", lambda: remove_cluster(node))


def remove_cluster(node: Node) -> None:
    """Delete the Cluster, wait for the operator's pods to go, remove the local volume's data (the
    node's stop keeps only the logs of its run directory)."""
    CustomObjectsApi(node.client).delete_namespaced_custom_object(*CNPG, DB_NAMESPACE, "clusters", CLUSTER)
    core = CoreV1Api(node.client)

    def gone() -> tuple[bool, str]:
        found = core.list_namespaced_pod(DB_NAMESPACE, label_selector=f"cnpg.io/cluster={CLUSTER}").items
        names = [p.metadata.name for p in found]
        return not names, f"pods {names}"

    api.wait_for(f"Cluster {CLUSTER}'s pods deleted", gone, 300)
    shutil.rmtree(volume_path(node.run_dir), ignore_errors=True)


def test_operator_from_the_release_manifest_is_available(node: Node, cnpg: dict[str, str]) -> None:
    done, state = operator.deployment_available(node.client)
    assert done, state
    deployment = AppsV1Api(node.client).read_namespaced_deployment(operator.DEPLOYMENT, operator.NAMESPACE)
    container = deployment.spec.template.spec.containers[0]
    assert (
        container.image
        == operator.operator_image()
        == f"ghcr.io/cloudnative-pg/cloudnative-pg:{operator.version()[1:]}"
    )


def test_webhook_rejects_a_cluster_setting_a_fixed_parameter(node: Node, cnpg: dict[str, str]) -> None:
    # `instances: 0` never reaches the webhook: the CRD's schema (minimum 1) refuses it first.
    # `port` is one of the parameters only the operator's webhook guards.
    with pytest.raises(ApiException) as refused:
        CustomObjectsApi(node.client).create_namespaced_custom_object(
            *CNPG, DB_NAMESPACE, "clusters", cluster({"port": "5433"}, name="bad-port")
        )
    message = api.message(refused.value)
    assert refused.value.status in (400, 403, 422), message
    assert 'admission webhook "vcluster.cnpg.io" denied the request' in message, message
    assert "Can't set fixed configuration parameter" in message and "port" in message, message


def test_cluster_becomes_healthy_and_a_pod_in_another_namespace_queries_it_through_the_rw_service(
    node: Node, cnpg: dict[str, str]
) -> None:
    client, password = node.client, secrets.token_hex(16)
    core, custom = CoreV1Api(client), CustomObjectsApi(client)
    local_volume(client, node.run_dir)
    core.create_namespaced_secret(DB_NAMESPACE, owner_secret(DB_NAMESPACE, password))
    custom.create_namespaced_custom_object(
        *CNPG, DB_NAMESPACE, "clusters", cluster({"max_connections": MAX_CONNECTIONS})
    )

    def healthy() -> tuple[bool, str]:
        status = custom.get_namespaced_custom_object_status(*CNPG, DB_NAMESPACE, "clusters", CLUSTER).get(
            "status", {}
        )
        phase, ready = status.get("phase"), status.get("readyInstances", 0)
        return phase == "Cluster in healthy state" and ready == 1, f"phase {phase!r}, readyInstances {ready}"

    timed("Cluster created -> healthy", lambda: api.wait_for(f"Cluster {CLUSTER} healthy", healthy, 900, 2))
    pods = core.list_namespaced_pod(DB_NAMESPACE, label_selector=f"cnpg.io/cluster={CLUSTER}").items
    for pod in pods:
        restarts = sum(s.restart_count for s in pod.status.container_statuses or [])
        SUMMARY.append(f"cnpg: pod {pod.metadata.name}: {pod.status.phase}, {restarts} restarts")
    instance = next(p for p in pods if p.metadata.name == f"{CLUSTER}-1")
    # PostgreSQL from the operand image the operator's configuration names; the instance manager
    # copied in by the bootstrap-controller init container from the operator's own image.
    images = {c.name: c.image for c in instance.spec.containers + instance.spec.init_containers}
    assert images == {
        "postgres": operator.postgres_image(),
        "bootstrap-controller": operator.operator_image(),
    }
    # ... under the security context CloudNativePG sets: uid/gid 26, read-only root filesystem
    postgres = next(c for c in instance.spec.containers if c.name == "postgres")
    pod_context, context = instance.spec.security_context, postgres.security_context
    assert (pod_context.run_as_user, pod_context.run_as_group) == (cnpg_images.POSTGRES_UID,) * 2, pod_context
    assert context.read_only_root_filesystem and context.capabilities.drop == ["ALL"], context
    status = custom.get_namespaced_custom_object_status(*CNPG, DB_NAMESPACE, "clusters", CLUSTER)["status"]
    image_info = status.get("pgDataImageInfo", {})
    SUMMARY.append(f"cnpg: Cluster status image {status.get('image')}, pgDataImageInfo {image_info}")
    assert image_info.get("majorVersion") == cnpg_images.PG_MAJOR, f"the operator derived {image_info}"

    kube.namespace(client, CLIENT_NAMESPACE)
    # what the client's own secret store would hold
    core.create_namespaced_secret(CLIENT_NAMESPACE, owner_secret(CLIENT_NAMESPACE, password))
    service = f"{CLUSTER}-rw.{DB_NAMESPACE}.svc"
    cluster_ip = core.read_namespaced_service(f"{CLUSTER}-rw", DB_NAMESPACE).spec.cluster_ip
    script = f"""
for attempt in $(seq 60); do
  address=$(getent hosts {service} | cut -d' ' -f1)
  answer=$(psql "host={service} dbname={OWNER} user={OWNER} connect_timeout=5" -tAc 'SHOW max_connections' 2>&1) && break
  sleep 2
done
server=$(psql "host={service} dbname={OWNER} user={OWNER}" -tAc 'SHOW server_version' 2>&1)
echo "address=$address attempts=$attempt server=$server answer=$answer" | tee /dev/termination-log
[ "$answer" = '{MAX_CONNECTIONS}' ]
"""
    password_env = {
        "name": "PGPASSWORD",
        "valueFrom": {"secretKeyRef": {"name": f"{OWNER}-owner", "key": "password"}},
    }
    core.create_namespaced_pod(CLIENT_NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psql", "namespace": CLIENT_NAMESPACE},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "psql", "image": operator.postgres_image(), "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", script], "env": [password_env],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }]},
    })  # fmt: skip
    psql = timed(
        "client pod connected through the -rw Service",
        lambda: kube.finished_pod(client, CLIENT_NAMESPACE, "psql", 600),
    )
    message = kube.termination_message(psql)
    SUMMARY.append(f"cnpg: client pod: {message}")
    assert psql.status.phase == "Succeeded", f"client pod {psql.status.phase}: {message}"
    assert f"address={cluster_ip} " in message, (
        f"{service} should resolve to the Service's IP {cluster_ip}: {message}"
    )
    assert message.endswith(f"answer={MAX_CONNECTIONS}"), message
    minor = cnpg_images.postgres_minor(cnpg_images.operand_packages())
    assert f"server={minor} (Debian " in message, (
        f"PostgreSQL {minor} from Debian's package expected: {message}"
    )

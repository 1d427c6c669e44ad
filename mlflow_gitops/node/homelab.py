"""What the homelab's cluster provides the chart, as the node presents it: storage classes, the
Secrets External Secrets would write, the node's labels.

* Storage: the two classes the homelab render asks for (the Cluster's, the artifact claim's). The PostgreSQL class (`longhorn` there, a
  block device in the homelab) is `local` PersistentVolumes, whose ownership the kubelet gives to
  the pod's fsGroup as it does on a block device; the artifacts class (`nfs-slow`, an NFS export)
  is `hostPath` ones, which the kubelet mounts as they are, without fsGroup, as it does NFS: each
  directory is owned by root and the group the server pod's supplementalGroups name (568), mode 2775,
  as the export is (docs/faults.md). Both classes have no provisioner: the volumes are made here,
  static, under the node's run directory, and released ones are kept (Retain).
* Secrets: for every ExternalSecret of the render, its target Secret with the template's literal
  values and random ones for what Vault holds (the pod runner's derivation,
  mlflow_gitops.podrunner.store), created directly; External Secrets itself is not installed.
* Labels: the kubelet labels the node kubernetes.io/arch itself (runtime.GOARCH); the render's
  Cluster nodeSelector must match the node's labels.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient, CoreV1Api, StorageV1Api

from mlflow_gitops.node import api, config
from mlflow_gitops.podrunner.render import Render
from mlflow_gitops.podrunner.store import generate_test_secrets
from mlflow_gitops.versions import ROOT

VALUES = ROOT / "values" / "homelab.yaml"
RENDER = ROOT / "rendered" / "homelab.yaml"
NO_PROVISIONER = "kubernetes.io/no-provisioner"


@dataclass(frozen=True)
class StorageClass:
    name: str
    size: str  # each volume's capacity: the values' request
    access_modes: tuple[str, ...]
    nfs: bool  # hostPath, no fsGroup, root:<group> 2775; else `local`, fsGroup applied
    volumes: int


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def render(path: Path = RENDER) -> Render:
    return Render.load(path)


def nfs_group(found: Render | None = None) -> int:
    """The group the artifact export gives its directories to: the server pod's supplementalGroups."""
    found = found or render()
    pod = found.one("Deployment", "mlflow")["spec"]["template"]["spec"]
    groups = (pod.get("securityContext") or {}).get("supplementalGroups") or []
    if len(groups) != 1:
        raise ValueError(
            f"{found.path.name}: Deployment mlflow's securityContext.supplementalGroups is {groups}: "
            "expected one group"
        )
    return int(groups[0])


def storage_classes(found: Render | None = None) -> list[StorageClass]:
    """The Cluster's class and the artifact claim's, as the render asks for them."""
    found = found or render()
    postgres = found.one("Cluster")["spec"]["storage"]
    claim = found.one("PersistentVolumeClaim")["spec"]
    # The operator makes a new claim for a replaced instance: room for a few.
    return [
        StorageClass(postgres["storageClass"], postgres["size"], ("ReadWriteOnce",), nfs=False, volumes=3),
        StorageClass(
            claim["storageClassName"], claim["resources"]["requests"]["storage"], tuple(claim["accessModes"]),
            nfs=True, volumes=2,
        ),
    ]  # fmt: skip


def volume_dir(run_dir: Path, storage_class: str, index: int) -> Path:
    return run_dir / "storage" / storage_class / f"volume-{index}"


def manifests(run_dir: Path, group: int | None = None) -> list[dict[str, Any]]:
    """The StorageClasses and their PersistentVolumes; makes each volume's directory."""
    group = nfs_group() if group is None else group
    objects: list[dict[str, Any]] = []
    for sc in storage_classes():
        objects.append({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": sc.name},
            "provisioner": NO_PROVISIONER,
            "reclaimPolicy": "Retain",
            # `local` volumes bind when a pod is scheduled; the NFS class binds at once, as an export.
            "volumeBindingMode": "Immediate" if sc.nfs else "WaitForFirstConsumer",
        })  # fmt: skip
        for index in range(sc.volumes):
            path = volume_dir(run_dir, sc.name, index)
            path.mkdir(parents=True, exist_ok=True)
            if sc.nfs:
                os.chown(path, 0, group)
                path.chmod(0o2775)
                source: dict[str, Any] = {"hostPath": {"path": str(path), "type": "Directory"}}
            else:
                source = {
                    "local": {"path": str(path)},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [config.NODE_NAME]},
                    ]}]}},
                }  # fmt: skip
            objects.append({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{sc.name}-{index}", "labels": {"storage-class": sc.name}},
                "spec": {
                    "storageClassName": sc.name,
                    "capacity": {"storage": sc.size},
                    "accessModes": list(sc.access_modes),
                    "persistentVolumeReclaimPolicy": "Retain",
                    "volumeMode": "Filesystem",
                    **source,
                },
            })  # fmt: skip
    return objects


def create_storage(client: ApiClient, run_dir: Path) -> list[str]:
    """Create the classes and volumes (those that exist are kept); returns `kind/name` of each."""
    made = []
    for obj in manifests(run_dir):
        if obj["kind"] == "StorageClass":
            api.create_or_keep(lambda obj=obj: StorageV1Api(client).create_storage_class(obj))
        else:
            api.create_or_keep(lambda obj=obj: CoreV1Api(client).create_persistent_volume(obj))
        made.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return made


def external_secrets(render_path: Path = RENDER) -> list[dict[str, Any]]:
    """The Secrets the render's ExternalSecrets would write, with random values for Vault's."""
    render = Render.load(render_path)
    types = {
        (es["spec"].get("target", {}).get("name") or es["metadata"]["name"]): es["spec"]
        .get("target", {})
        .get("template", {})
        .get("type", "Opaque")
        for es in render.find("ExternalSecret")
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mlflow-node-test"}},
            "type": types[name],
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }
        for name, data in generate_test_secrets(render).items()
    ]


def create_secrets(client: ApiClient, namespace: str, render_path: Path = RENDER) -> list[str]:
    """Create the ExternalSecrets' target Secrets in `namespace` (those that exist are kept);
    returns a line per Secret saying what was made and why."""
    lines = []
    for secret in external_secrets(render_path):
        secret["metadata"]["namespace"] = namespace
        api.create_or_keep(
            lambda secret=secret: CoreV1Api(client).create_namespaced_secret(namespace, secret)
        )
        keys = ", ".join(sorted(secret["data"]))
        lines.append(
            f"Secret {namespace}/{secret['metadata']['name']} ({secret['type']}; {keys}): created by the "
            "test with random values where Vault holds them, standing in for its ExternalSecret"
        )
    return lines


def node_labels(client: ApiClient) -> dict[str, str]:
    return CoreV1Api(client).read_node(config.NODE_NAME).metadata.labels or {}


def unmatched_node_selector(client: ApiClient) -> dict[str, str]:
    """The render's Cluster nodeSelector entries the node's labels do not match (empty: all match)."""
    wanted = (render().one("Cluster")["spec"].get("affinity") or {}).get("nodeSelector") or {}
    labels = node_labels(client)
    return {key: value for key, value in wanted.items() if labels.get(key) != value}

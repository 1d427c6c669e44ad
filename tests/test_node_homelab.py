"""What the one-node cluster takes from the render and the homelab's values, offline: the render's
image references as containerd names them (mlflow_gitops/node/render_images.py), the storage
classes, the export's group and the Secrets External Secrets would write (node/homelab.py)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from mlflow_gitops.node import homelab, render_images
from mlflow_gitops.podrunner.render import Render
from tests.support.manifests import one
from tests.support.versions import app_version


def test_the_mlflow_image_is_the_render_reference_at_the_chart_app_version() -> None:
    assert render_images.reference("mlflow") == f"docker.io/burakince/mlflow:{app_version()}"
    assert render_images.reference("chart-busybox").startswith("docker.io/library/busybox:")
    assert render_images.aliases("busybox") == [], "the node's own busybox keeps its localhost name"


@pytest.mark.parametrize(
    ("ref", "normalised"),
    [
        ("busybox:1.2.3", "docker.io/library/busybox:1.2.3"),
        ("burakince/mlflow:1.2.3", "docker.io/burakince/mlflow:1.2.3"),
        ("ghcr.io/cloudnative-pg/postgresql:17", "ghcr.io/cloudnative-pg/postgresql:17"),
        ("localhost/pause:latest", "localhost/pause:latest"),
    ],
)
def test_image_references_are_normalised_as_the_cri_does(ref: str, normalised: str) -> None:
    assert render_images.normalise(ref) == normalised


def test_an_untagged_or_unknown_image_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'busybox' has no tag"):
        render_images.normalise("busybox")
    with pytest.raises(ValueError, match="unknown image 'postgres': allowed mlflow, chart-busybox"):
        render_images.reference("postgres")


def test_the_render_images_cache_key_changes_with_the_requirements(monkeypatch, tmp_path: Path) -> None:
    before = render_images.inputs("mlflow")
    changed = tmp_path / "requirements-e2e.txt"
    changed.write_text(render_images.REQUIREMENTS.read_text() + "extra==1.0\n")
    monkeypatch.setattr(render_images, "REQUIREMENTS", changed)
    after = render_images.inputs("mlflow")
    assert before["requirements-e2e.txt"] != after["requirements-e2e.txt"]
    assert "requirements-e2e.txt" not in render_images.inputs("chart-busybox")


def test_storage_classes_are_the_ones_the_homelab_render_claims() -> None:
    render = homelab.render()
    cluster_storage = one(render.objects, "Cluster")["spec"]["storage"]
    claim = one(render.objects, "PersistentVolumeClaim")["spec"]
    classes = {sc.name: sc for sc in homelab.storage_classes()}
    assert set(classes) == {cluster_storage["storageClass"], claim["storageClassName"]}
    artifacts = classes[claim["storageClassName"]]
    assert artifacts.nfs and "ReadWriteMany" in artifacts.access_modes
    assert artifacts.size == claim["resources"]["requests"]["storage"]
    assert not classes[cluster_storage["storageClass"]].nfs
    assert homelab.nfs_group() == 568


def test_the_nfs_class_volumes_are_owned_as_the_export_is(tmp_path: Path) -> None:
    group = os.getgid()  # the values' group needs root to chown to; the mode is what is checked
    objects = homelab.manifests(tmp_path, group=group)
    volumes = [o for o in objects if o["kind"] == "PersistentVolume"]
    nfs = [v for v in volumes if "hostPath" in v["spec"]]
    local = [v for v in volumes if "local" in v["spec"]]
    assert nfs and local, [v["metadata"]["name"] for v in volumes]
    for volume in nfs:
        path = Path(volume["spec"]["hostPath"]["path"])
        assert path.is_relative_to(tmp_path)
        assert (path.stat().st_gid, path.stat().st_mode & 0o7777) == (group, 0o2775)
    for volume in local:
        assert volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"], volume
    classes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StorageClass"}
    assert {v["spec"]["storageClassName"] for v in volumes} == set(classes)


def test_more_than_one_export_group_is_refused_by_name() -> None:
    pod = {"securityContext": {"supplementalGroups": [568, 1000]}, "containers": []}
    deployment = {"kind": "Deployment", "metadata": {"name": "mlflow"}, "spec": {"template": {"spec": pod}}}
    with pytest.raises(ValueError, match=r"supplementalGroups is \[568, 1000\]: expected one group"):
        homelab.nfs_group(Render(Path("homelab.yaml"), [deployment]))


def test_the_external_secrets_targets_get_their_names_types_and_random_values() -> None:
    first = {s["metadata"]["name"]: s for s in homelab.external_secrets()}
    second = {s["metadata"]["name"]: s for s in homelab.external_secrets()}
    assert set(first) == {"mlflow-postgres-credentials", "mlflow-flask-secret-key"}
    credentials = first["mlflow-postgres-credentials"]
    assert credentials["type"] == "kubernetes.io/basic-auth"
    assert base64.b64decode(credentials["data"]["username"]) == b"mlflow"
    assert credentials["data"]["password"] != second["mlflow-postgres-credentials"]["data"]["password"]
    assert set(first["mlflow-flask-secret-key"]["data"]) == {"MLFLOW_FLASK_SERVER_SECRET_KEY"}

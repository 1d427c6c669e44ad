"""Backups are off by default and, with one switch, become valid CloudNativePG snapshot backups."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlflow_gitops import chart
from mlflow_gitops.validate import kubeconform
from tests.support.manifests import Obj, find, one

SWITCH = ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"]


def with_backup() -> list[Obj]:
    return chart.template_own([chart.VALUES / "homelab.yaml"], set_values=SWITCH).documents


def test_backups_are_off_by_default(homelab: list[Obj]) -> None:
    assert find(homelab, "ScheduledBackup") == []
    assert "backup" not in one(homelab, "Cluster")["spec"]


def test_one_switch_schedules_volume_snapshot_backups() -> None:
    objs = with_backup()
    scheduled = one(objs, "ScheduledBackup")
    cluster = one(objs, "Cluster")
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert scheduled["spec"]["method"] == "volumeSnapshot"
    assert cluster["spec"]["backup"]["volumeSnapshot"]["className"] == "longhorn-snapshot"


def test_backup_objects_validate(tmp_path: Path) -> None:
    out = tmp_path / "backup.yaml"
    out.write_text(yaml.safe_dump_all(with_backup()))
    assert kubeconform([out]) == ""


RUNBOOK = chart.ROOT / "docs" / "restore.md"
RESTORE_CLUSTER = chart.ROOT / "docs" / "restore-cluster.yaml"


def test_restore_runbook_points_at_its_manifest() -> None:
    """The runbook applies the validated file; it carries no second copy of the manifest to drift."""
    runbook = RUNBOOK.read_text()
    assert "kubectl apply -f docs/restore-cluster.yaml" in runbook
    assert "(restore-cluster.yaml)" in runbook, "docs/restore.md links the manifest"
    assert "kind: Cluster" not in runbook


def test_restore_cluster_validates() -> None:
    """The runbook's manifest is a valid CloudNativePG Cluster, not prose that merely looks like one."""
    assert kubeconform([RESTORE_CLUSTER]) == ""


def test_restore_cluster_matches_the_homelab_database(homelab: list[Obj]) -> None:
    """Restored with the storage, database, owner and credentials the release's Cluster has."""
    restore = yaml.safe_load(RESTORE_CLUSTER.read_text())
    cluster = one(homelab, "Cluster")
    recovery = restore["spec"]["bootstrap"]["recovery"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert restore["metadata"]["namespace"] == chart.NAMESPACE
    assert restore["metadata"]["name"] != cluster["metadata"]["name"], "a new Cluster, beside the old one"
    assert restore["spec"]["storage"] == cluster["spec"]["storage"]
    assert (recovery["database"], recovery["owner"], recovery["secret"]) == (
        initdb["database"],
        initdb["owner"],
        initdb["secret"],
    )
    assert recovery["volumeSnapshots"]["storage"]["kind"] == "VolumeSnapshot"

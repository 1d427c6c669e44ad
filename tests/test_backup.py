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


def test_readme_restore_cluster_validates(tmp_path: Path) -> None:
    """The runbook's manifest is a valid CloudNativePG Cluster, not prose that merely looks like one."""
    readme = (chart.ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    restore = [b for b in blocks if "kind: Cluster" in b and "recovery:" in b]
    assert len(restore) == 1
    doc = yaml.safe_load("\n".join(line[3:] if line.startswith("   ") else line for line in restore[0].splitlines()))
    assert doc["spec"]["bootstrap"]["recovery"]["owner"] == "mlflow"
    out = tmp_path / "restore.yaml"
    out.write_text(yaml.safe_dump(doc))
    assert kubeconform([out]) == ""

"""Backups are off by default and, with one switch, become valid CloudNativePG snapshot backups."""

from __future__ import annotations

from pathlib import Path

import yaml
from manifests import Obj, find, one

import chart
from validate import kubeconform

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

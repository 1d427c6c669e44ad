"""A node does not start on a nearly full disk (mlflow_gitops.node.host.require_free_space): under
the kubelet's eviction floor its pods would be evicted and refused, so the start fails first,
naming the filesystem and what it has."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlflow_gitops.node import build, config, host, leftovers
from mlflow_gitops.node.node import Node


def free_bytes(path: Path) -> int:
    usage = os.statvfs(path)
    return usage.f_bavail * usage.f_frsize


def test_a_filesystem_with_less_than_needed_is_refused_naming_it_and_its_free_space(tmp_path: Path) -> None:
    with pytest.raises(
        RuntimeError, match=rf"GiB free on the filesystem of {tmp_path}, which has [0-9.]+ GiB"
    ):
        host.require_free_space(tmp_path, free_bytes(tmp_path) + 2**40)


def test_a_filesystem_with_room_is_accepted(tmp_path: Path) -> None:
    host.require_free_space(tmp_path, 2**20)


def test_the_start_checks_the_space_after_cleaning_a_killed_run_and_before_it_makes_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "missing", list)
    monkeypatch.setattr(host, "NEEDED_FREE", free_bytes(tmp_path) + 2**40)
    cleaned: list[dict] = []
    monkeypatch.setattr(leftovers, "clean", lambda record, say: cleaned.append(record) or [])
    lock = tmp_path / "node.lock"
    lock.write_text(json.dumps({"pid": 1, "run_dir": "/tmp/mlflow-node-killed"}))  # a killed run's
    node = Node(tmp_path / "run", log=False)
    node._lock = host.MachineLock(lock)
    # a name of its own: a node of this same pytest process (tests/node) may hold mlflow-node-<pid>
    node.netns = host.NetworkNamespace(f"mlflow-free-space-test-{os.getpid()}")
    with pytest.raises(RuntimeError, match="the node needs"):
        node.start()
    assert [r["run_dir"] for r in cleaned] == ["/tmp/mlflow-node-killed"], (
        "the killed run was not cleaned first"
    )
    assert not node.netns.path.exists(), "the network namespace was made"
    node.stop()
    assert lock.read_text() == "", "a start that touched nothing left a record"


def test_the_kubelet_evicts_below_the_floor_the_free_space_check_adds_to(tmp_path: Path) -> None:
    text = config.kubelet_config(config.Layout(tmp_path)).read_text()
    floor = f"{host.EVICTION_FREE // 2**20}Mi"
    assert f"nodefs.available: {floor}" in text and f"imagefs.available: {floor}" in text, text
    assert host.NEEDED_FREE > host.EVICTION_FREE

"""A node does not start on a nearly full disk (mlflow_gitops.node.host.require_free_space): under
the kubelet's eviction floor its pods would be evicted and refused, so the start fails first,
naming the filesystem and what it has."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlflow_gitops.node import build, config, host
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


def test_the_start_checks_the_space_before_it_takes_the_machine_lock_or_makes_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "missing", list)
    monkeypatch.setattr(host, "NEEDED_FREE", free_bytes(tmp_path) + 2**40)
    node = Node(tmp_path / "run", log=False)
    node._lock = host.MachineLock(tmp_path / "node.lock")
    with pytest.raises(RuntimeError, match="the node needs"):
        node.start()
    assert not (tmp_path / "node.lock").exists(), "the lock was taken"
    assert not node.netns.path.exists(), "the network namespace was made"


def test_the_kubelet_evicts_below_the_floor_the_free_space_check_adds_to(tmp_path: Path) -> None:
    text = config.kubelet_config(config.Layout(tmp_path)).read_text()
    floor = f"{host.EVICTION_FREE // 2**20}Mi"
    assert f"nodefs.available: {floor}" in text and f"imagefs.available: {floor}" in text, text
    assert host.NEEDED_FREE > host.EVICTION_FREE

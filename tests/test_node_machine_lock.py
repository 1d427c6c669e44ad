"""One node per machine (mlflow_gitops.node.host.MachineLock): a second node waits for the first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlflow_gitops.node import host


def test_a_second_node_waits_for_the_lock_and_names_the_holder_when_it_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    first, second = host.MachineLock(path), host.MachineLock(path)
    first.acquire(timeout=1)
    said: list[str] = []
    with pytest.raises(TimeoutError, match=rf"another node \(pid {os.getpid()}\) still holds"):
        second.acquire(timeout=3, say=said.append)
    assert said and f"pid {os.getpid()}" in said[0], said
    first.release()
    assert second.acquire(timeout=1) < 1
    assert path.read_text().strip() == str(os.getpid())
    second.release()
    assert path.read_text() == ""

"""One node per machine (mlflow_gitops.node.host.MachineLock): a second node waits for the first."""

from __future__ import annotations

import json
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
    assert json.loads(path.read_text()) == {"pid": os.getpid()}
    assert second.abandoned == [], "a released lock left a record"
    second.release()
    assert path.read_text() == ""


def test_a_killed_holders_record_is_found_by_the_next_start_and_a_clean_release_leaves_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node.lock"
    killed = host.MachineLock(path)
    killed.acquire(timeout=1)
    killed.record(run_dir="/tmp/mlflow-node-killed", netns="mlflow-node-1")
    os.close(killed._fd)  # the kernel drops the flock of a dead process; its record stays
    record = {"pid": os.getpid(), "run_dir": "/tmp/mlflow-node-killed", "netns": "mlflow-node-1"}
    after = host.MachineLock(path)
    after.acquire(timeout=1)
    assert after.abandoned == [record]
    after.release()  # not cleaned: the record stays
    cleaning = host.MachineLock(path)
    cleaning.acquire(timeout=1)
    assert cleaning.abandoned == [record]
    cleaning.cleaned()
    cleaning.release()
    clean = host.MachineLock(path)
    clean.acquire(timeout=1)
    assert clean.abandoned == []
    clean.release()


def test_a_record_stays_until_a_start_has_cleaned_it_or_when_a_stop_left_something(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    killed = host.MachineLock(path)
    killed.acquire(timeout=1)
    killed.record(run_dir="/tmp/mlflow-node-killed")
    os.close(killed._fd)
    cleaning = host.MachineLock(path)
    cleaning.acquire(timeout=1)
    os.close(cleaning._fd)  # killed while cleaning: it never wrote its own record
    retry = host.MachineLock(path)
    retry.acquire(timeout=1)
    assert [r["run_dir"] for r in retry.abandoned] == ["/tmp/mlflow-node-killed"]
    retry.record(run_dir="/tmp/mlflow-node-next")  # cleaned: its own record replaces the old one
    retry.release(keep_record=True)  # its stop left something
    last = host.MachineLock(path)
    last.acquire(timeout=1)
    assert [r["run_dir"] for r in last.abandoned] == ["/tmp/mlflow-node-next"]
    last.release()

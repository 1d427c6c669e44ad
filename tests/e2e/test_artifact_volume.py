"""The artifact volume when it is not what the server needs: mounted read-only, and an NFS export
that ignores fsGroup (owned root:568, mode 2775, as docs/faults.md asks of
`nfs-slow`). The pod runs as uid 1001; only the supplemental group 568 lets it write there."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from mlflow_gitops import podrunner
from tests.support.pods import edited_render, own_stack
from tests.support.readback import Reader

pytestmark = pytest.mark.e2e

NFS_EXPORT = (0, 568, 0o2775)  # uid, gid, mode of the export's directory (setgid, group-writable)
ARTIFACTS = "artifacts"  # the pod's volume backed by the claim


def _volume(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    return next(v for v in volumes if v["name"] == name)


def _cause(pod: podrunner.PodRunner, wait: float = 60) -> str:
    """The server log's last OS error (logged just after the answer): what the bare 500 does not say."""
    deadline = time.monotonic() + wait
    while True:
        errors = [line.strip() for line in pod.server.log_tail(400).splitlines() if "[Errno" in line]
        if errors or time.monotonic() > deadline:
            return errors[-1] if errors else "(no OS error logged)"
        time.sleep(0.1)


def _new_run(reader: Reader, prefix: str) -> dict[str, Any]:
    experiment = reader.create_experiment(f"{prefix}-{uuid.uuid4().hex[:8]}")
    run = reader.post("/api/2.0/mlflow/runs/create", {"experiment_id": experiment, "run_name": prefix})
    info: dict[str, Any] = run["run"]["info"]
    reader.post("/api/2.0/mlflow/runs/log-parameter", {"run_id": info["run_id"], "key": "k", "value": "v"})
    return info


def _upload(reader: Reader, run: dict[str, Any], path: str, body: bytes) -> requests.Response:
    """On a connection of its own: after a 500 the server may drop the connection it answered on."""
    root = str(run["artifact_uri"]).removeprefix("mlflow-artifacts:/").strip("/")
    url = f"{reader.base}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"
    return requests.put(url, data=body, headers={"Host": str(reader.http.headers["Host"])}, timeout=60)


def test_read_only_artifact_volume_refuses_uploads_and_keeps_the_run_consistent(
    stack: podrunner.PodRunner, tmp_path: Path, figures: Callable[[str], None]
) -> None:
    """A second pod of the release whose artifact claim is mounted read-only."""
    render = edited_render(
        tmp_path, lambda d: _volume(d, ARTIFACTS)["persistentVolumeClaim"].update(readOnly=True)
    )
    with podrunner.PodRunner(render, replica_of=stack) as pod:
        reader = Reader(pod.url, pod.route_host)
        run = _new_run(reader, "read-only")
        resp = _upload(reader, run, "model/weights.bin", os.urandom(4096))
        stored = reader.get("/api/2.0/mlflow/runs/get", run_id=run["run_id"])["run"]
        listed = reader.get("/api/2.0/mlflow/artifacts/list", run_id=run["run_id"]).get("files", [])
        root = str(run["artifact_uri"]).removeprefix("mlflow-artifacts:/").strip("/")
        download = reader.http.get(
            f"{reader.base}/api/2.0/mlflow-artifacts/artifacts/{root}/model/weights.bin", timeout=60
        )
        cause = _cause(pod)
    figures(
        f"upload to a read-only artifact volume: HTTP {resp.status_code} {resp.text[:120]!r} "
        f"(server log: {cause}); run "
        f"{stored['info']['status']} with params {[p['key'] for p in stored['data'].get('params', [])]}, "
        f"artifacts listed {listed}, download HTTP {download.status_code}"
    )
    assert resp.status_code == 500
    assert stored["info"]["run_id"] == run["run_id"] and stored["data"]["params"] == [
        {"key": "k", "value": "v"}
    ]
    assert listed == []
    assert download.status_code == 404


@pytest.fixture(scope="module")
def nfs_pod() -> Iterator[podrunner.PodRunner]:
    """The rendered pod on a claim that the kubelet leaves as the NFS export presents it."""
    with own_stack(claim_ownership=NFS_EXPORT) as pod:
        yield pod


def test_nfs_export_owned_by_group_568_is_writable_through_the_supplemental_group(
    nfs_pod: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    groups = nfs_pod.pod["securityContext"].get("supplementalGroups", [])
    claim = nfs_pod.volume_path(ARTIFACTS)
    st = claim.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == NFS_EXPORT, (
        "the export is not as docs/faults.md says"
    )
    reader = Reader(nfs_pod.url, nfs_pod.route_host)
    run = _new_run(reader, "nfs")
    body = os.urandom(64 * 1024)
    resp = _upload(reader, run, "model/weights.bin", body)
    stored = [p for p in claim.rglob("weights.bin")]
    owner = [(p.stat().st_uid, p.stat().st_gid) for p in stored]
    figures(
        f"pod uid 1001, supplementalGroups {groups}, export root:568 2775: upload HTTP {resp.status_code}; "
        f"file on the export owned {owner}"
    )
    assert 568 in groups
    assert resp.status_code == 200, resp.text[:300]
    assert owner == [(1001, 568)], "setgid should give the export's group to what the server writes"
    assert hashlib.sha256(stored[0].read_bytes()).digest() == hashlib.sha256(body).digest()


def test_without_the_supplemental_group_uploads_to_the_nfs_export_fail_with_500(
    nfs_pod: podrunner.PodRunner, tmp_path: Path, figures: Callable[[str], None]
) -> None:
    """The same export, the pod rendered without supplementalGroups: MLflow starts, uploads fail."""
    render = edited_render(
        tmp_path, lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("supplementalGroups")
    )
    with podrunner.PodRunner(render, replica_of=nfs_pod) as pod:
        reader = Reader(pod.url, pod.route_host)
        health = reader.http.get(f"{reader.base}/health", timeout=10)
        run = _new_run(reader, "nfs-no-group")
        resp = _upload(reader, run, "model/weights.bin", os.urandom(4096))
        cause = _cause(pod)
    figures(
        f"without supplementalGroups: /health {health.status_code} {health.text!r}, "
        f"upload HTTP {resp.status_code} "
        f"{resp.text[:120]!r} (server log: {cause})"
    )
    assert health.status_code == 200
    assert resp.status_code == 500

"""The clean-up CronJob run as the kubelet runs one of its Jobs' pods (the rendered jobTemplate:
init container, then `mlflow gc` with the server's PG* ConfigMap and Secret, the artifact claim, the
Service for artifact deletion) beside the running server: the runs deleted longer ago than
`--older-than` lose their rows and artifact files, a run deleted recently, the live runs and a
partial upload still being written are untouched, a stale partial upload is gone."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from mlflow_gitops import podrunner

pytestmark = pytest.mark.e2e

DAY = 86400


class Api:
    def __init__(self, stack: podrunner.PodRunner) -> None:
        self.base = f"{stack.url}/api/2.0"
        self.http = requests.Session()
        self.http.headers["Host"] = stack.service_host

    def post(self, endpoint: str, body: dict) -> dict:
        resp = self.http.post(f"{self.base}/mlflow/{endpoint}", json=body, timeout=60)
        assert resp.status_code == 200, f"{endpoint}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def run_with_artifact(self, experiment_id: str, text: str) -> dict:
        run = self.post("runs/create", {"experiment_id": experiment_id})["run"]["info"]
        path = run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
        put = self.http.put(
            f"{self.base}/mlflow-artifacts/artifacts/{path}/model.txt", data=text.encode(), timeout=60
        )
        assert put.status_code == 200, put.text
        return {**run, "path": path}


def gc_cronjob(stack: podrunner.PodRunner) -> dict:
    (cronjob,) = stack.render.find("CronJob")
    return cronjob


def older_than_days(cronjob: dict) -> float:
    command = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    value = command[command.index("--older-than") + 1]
    assert value.endswith("d") and value[:-1].isdigit(), f"this test reads days only, not {value!r}"
    return float(value[:-1])


def test_gc_cronjob_deletes_old_deleted_runs_and_stale_partial_uploads_only(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    cronjob = gc_cronjob(stack)
    keep_days = older_than_days(cronjob)
    api = Api(stack)
    exp = api.post("experiments/create", {"name": f"gc-{uuid.uuid4().hex[:8]}"})["experiment_id"]
    old = [api.run_with_artifact(exp, f"old {i}") for i in range(2)]
    recent = api.run_with_artifact(exp, "deleted yesterday")
    live = api.run_with_artifact(exp, "live")
    for run in [*old, recent]:
        api.post("runs/delete", {"run_id": run["run_id"]})
    # The two old ones were deleted a day longer ago than the CronJob keeps them; the recent one a day ago.
    now_ms = int(time.time() * 1000)
    db = stack.postgres
    for run, days in [*((r, keep_days + 1) for r in old), (recent, 1)]:
        db.psql(
            "UPDATE runs SET deleted_time = :ms WHERE run_uuid = :'id'",
            database=db.database,
            variables={"ms": str(now_ms - int(days * DAY * 1000)), "id": run["run_id"]},
        )
    artifacts = Path(stack.volume_path("artifacts"))
    minutes = int(
        next(
            a
            for a in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0][
                "command"
            ]
            if a.startswith("+")
        ).lstrip("+")
    )
    stale = artifacts / live["path"] / ".artifact.uploading.stale"
    fresh = artifacts / live["path"] / ".artifact.uploading.fresh"
    for partial in (stale, fresh):
        partial.write_bytes(b"partial")
    os.utime(stale, (time.time() - (minutes + 10) * 60,) * 2)
    assert all((artifacts / r["path"] / "model.txt").exists() for r in [*old, recent, live])

    started = time.monotonic()
    code, output = stack.run_cronjob(
        cronjob["metadata"]["name"], timeout=cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]
    )
    took = time.monotonic() - started
    assert code == 0, output[-3000:]

    ids = ",".join(f"'{r['run_id']}'" for r in [*old, recent, live])
    rows = db.psql(
        f"SELECT run_uuid, lifecycle_stage FROM runs WHERE run_uuid IN ({ids})", database=db.database
    )
    left = dict(line.split("|") for line in rows.split())
    assert left == {recent["run_id"]: "deleted", live["run_id"]: "active"}
    for table in ("metrics", "params", "tags", "latest_metrics"):
        gone = ",".join(f"'{r['run_id']}'" for r in old)
        assert (
            db.psql(f"SELECT count(*) FROM {table} WHERE run_uuid IN ({gone})", database=db.database).strip()
            == "0"
        )
    for run in old:
        assert not (artifacts / run["path"]).exists(), f"artifacts of {run['run_id']} left behind"
        assert f"Run with ID {run['run_id']} has been permanently deleted" in output
    for run in (recent, live):
        assert (artifacts / run["path"] / "model.txt").read_text() in ("deleted yesterday", "live")
    assert not stale.exists() and fresh.exists()
    fresh.unlink()
    figures(
        f"CronJob pod exited {code} in {took:.1f} s: {len(old)} runs deleted > {keep_days:.0f} d ago gone "
        f"(rows and artifacts), 1 deleted 1 d ago and 1 live kept; partial upload older than {minutes} min removed"
    )

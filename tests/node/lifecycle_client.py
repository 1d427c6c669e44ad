"""The client of tests/node/test_helm_install.py's release lifecycle, run inside a pod of the MLflow
image (`python -c <this file>`), through the Service's DNS name only (MLFLOW_TRACKING_URI).

LIFECYCLE_MODE=write: log a run with a metric and an artifact, register a model version of it.
LIFECYCLE_MODE=read: read the run (RUN_ID), its artifact and the model version (MODEL_VERSION) back.
Either prints one line `RESULT <json>` with what it saw; the test compares the two. The MLflow
client's own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, backoff) apply to every call.
"""

import hashlib
import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient

EXPERIMENT = "release-lifecycle"
MODEL = "release-lifecycle-model"
METRIC = "accuracy"
ARTIFACT = "model/weights.bin"


def write(client: MlflowClient, work: str) -> dict:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    payload = os.urandom(4096)
    path = os.path.join(work, os.path.basename(ARTIFACT))
    with open(path, "wb") as handle:
        handle.write(payload)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metric(METRIC, 0.93)
        mlflow.log_artifact(path, artifact_path=os.path.dirname(ARTIFACT))
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    source = f"{run.info.artifact_uri}/{os.path.dirname(ARTIFACT)}"
    version = client.create_model_version(MODEL, source, run_id=run.info.run_id)
    return {
        "run_id": run.info.run_id,
        "metric": METRIC,
        "value": 0.93,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "model": MODEL,
        "version": version.version,
        "source": version.source,
    }


def read(client: MlflowClient, work: str) -> dict:
    run_id, version = os.environ["RUN_ID"], os.environ["MODEL_VERSION"]
    run = client.get_run(run_id)
    local = client.download_artifacts(run_id, ARTIFACT, work)
    with open(local, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    found = client.get_model_version(MODEL, version)
    return {
        "run_id": run.info.run_id,
        "metric": METRIC,
        "value": run.data.metrics.get(METRIC),
        "sha256": digest,
        "model": found.name,
        "version": found.version,
        "source": found.source,
        "model_run_id": found.run_id,
        "status": found.status,
    }


def main() -> int:
    mode = os.environ.get("LIFECYCLE_MODE")
    if mode not in ("write", "read"):
        print(f"LIFECYCLE_MODE is {mode!r}: expected 'write' or 'read'")
        return 2
    with tempfile.TemporaryDirectory() as work:
        result = (write if mode == "write" else read)(MlflowClient(), work)
    print("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""helm test: from inside the cluster, through the MLflow Service only, create a run, log a metric
and a small artifact through the proxied artifact path, and read both back."""

import hashlib
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient

EXPERIMENT = os.environ.get("SMOKE_TEST_EXPERIMENT", "helm-test")


def main() -> int:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    payload = os.urandom(4096)
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "smoke.bin")
        with open(path, "wb") as handle:
            handle.write(payload)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metric("smoke", 1.0)
            mlflow.log_artifact(path)
        run_id = run.info.run_id
        fetched = client.get_run(run_id)
        if fetched.data.metrics.get("smoke") != 1.0:
            print(f"FAIL: metric smoke of run {run_id} is {fetched.data.metrics.get('smoke')}")
            return 1
        if not fetched.info.artifact_uri.startswith("mlflow-artifacts:"):
            print(f"FAIL: artifacts are not proxied: {fetched.info.artifact_uri}")
            return 1
        local = client.download_artifacts(run_id, "smoke.bin", os.path.join(work, "down"))
        with open(local, "rb") as handle:
            if hashlib.sha256(handle.read()).digest() != hashlib.sha256(payload).digest():
                print(f"FAIL: artifact smoke.bin of run {run_id} came back different")
                return 1
    print(f"OK: run {run_id} in experiment {EXPERIMENT}: metric and artifact round-tripped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

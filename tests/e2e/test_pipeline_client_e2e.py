"""A pipeline step in a client namespace logs a run with an artifact through the Service's in-cluster
name: the documented Argo Workflows step (docs/examples/argo-workflowtemplate.yaml: its image,
command, args and MLFLOW_TRACKING_URI) run as a pod beside the server, with the real MLflow client.
Its namespace stands in for `argo`; the NetworkPolicy verdict for it is tests/test_pipeline_clients.py's
(the harness does not enforce policies)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
import yaml

from mlflow_gitops import podrunner
from mlflow_gitops.versions import ROOT

pytestmark = pytest.mark.e2e

WORKFLOW_TEMPLATE = ROOT / "docs" / "examples" / "argo-workflowtemplate.yaml"


def workflow_step_pod(parameters: dict[str, str]) -> dict[str, Any]:
    """The pod Argo runs for the template's step: its container (`main`), the parameters substituted."""
    (template,) = yaml.safe_load(WORKFLOW_TEMPLATE.read_text())["spec"]["templates"]
    main = copy.deepcopy(template["container"])
    main["name"] = "main"
    for key in ("command", "args"):
        for placeholder, value in parameters.items():
            main[key] = [part.replace("{{" + placeholder + "}}", value) for part in main[key]]
    return {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1001,
            "runAsGroup": 1001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
    }


def api(stack: podrunner.PodRunner) -> requests.Session:
    http = requests.Session()
    http.headers["Host"] = stack.service_host
    return http


def test_a_workflow_step_logs_a_run_with_an_artifact_through_the_service(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    experiment = f"pipelines-{uuid.uuid4().hex[:8]}"
    workflow = f"train-and-log-{uuid.uuid4().hex[:5]}"
    pod = workflow_step_pod({"inputs.parameters.experiment": experiment, "workflow.name": workflow})
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"].startswith(f"http://{stack.service_host.split(':')[0]}")
    code, output = stack.run_pod_spec(f"argo/{workflow}", pod, timeout=180)
    assert code == 0, output[-3000:]

    http, base = api(stack), stack.url
    exp = http.get(
        f"{base}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}, timeout=30
    )
    assert exp.status_code == 200, exp.text
    exp_id = exp.json()["experiment"]["experiment_id"]
    found = http.post(
        f"{base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp_id]}, timeout=30
    ).json()
    (run,) = found["runs"]
    assert run["info"]["run_name"] == workflow
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"source": "argo"}
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"loss": 0.1}
    uri = run["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), "the client uploaded through the server"
    path = uri.removeprefix("mlflow-artifacts:/").strip("/")
    download = http.get(f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}/notes.txt", timeout=30)
    assert download.status_code == 200 and download.text == f"trained by {workflow}"
    on_volume = stack.volume_path("artifacts") / path / "notes.txt"
    assert on_volume.read_text() == f"trained by {workflow}"
    figures(f"step pod exited {code}; run {run['info']['run_id']} with notes.txt on the artifact volume")

"""The chart's `helm test` hook, run as the cluster would run it: its Pod (command, env, volumes,
securityContext as rendered) beside the server, reaching it through the Service's in-cluster name
(MLFLOW_TRACKING_URI), as `helm test mlflow -n mlflow` does after an install."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from mlflow_gitops import podrunner

pytestmark = pytest.mark.e2e


def test_helm_test_pod_passes_against_the_server(
    stack: podrunner.PodRunner, figures: Callable[[str], None]
) -> None:
    hooks = [
        p
        for p in stack.render.find("Pod")
        if (p["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"
    ]
    assert len(hooks) == 1, "expected one helm test Pod in the render"
    pod = hooks[0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
    uri = urlsplit(str(env["MLFLOW_TRACKING_URI"]))
    service = stack.render.service_for(stack.deployment)
    assert (uri.hostname, uri.port) == (
        f"{service['metadata']['name']}.{stack.namespace}.svc.cluster.local",
        service["spec"]["ports"][0]["port"],
    ), "the test pod does not go through the server's Service"
    code, output = stack.run_test_pod(pod["metadata"]["name"], timeout=120)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    figures(
        f"Pod {pod['metadata']['name']} ({' '.join(pod['spec']['containers'][0]['command'])}) "
        f"exited {code}: {last}"
    )
    assert code == 0, output[-2000:]
    assert last.startswith("OK:"), output[-2000:]

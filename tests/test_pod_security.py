"""Every pod the chart creates meets the "restricted" Pod Security Standard."""

from __future__ import annotations

import copy

from tests.support.manifests import Obj, find
from tests.support.pss import violations

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def pod_specs(objs: list[Obj]) -> dict[str, Obj]:
    specs: dict[str, Obj] = {}
    for kind in WORKLOADS:
        for obj in find(objs, kind):
            template = (
                obj["spec"]["jobTemplate"]["spec"]["template"]
                if kind == "CronJob"
                else obj["spec"]["template"]
            )
            specs[f"{kind}/{obj['metadata']['name']}"] = template["spec"]
    for pod in find(objs, "Pod"):
        specs[f"Pod/{pod['metadata']['name']}"] = pod["spec"]
    return specs


def test_every_pod_template_is_restricted(homelab: list[Obj]) -> None:
    specs = pod_specs(homelab)
    assert specs, "no pod templates rendered"
    problems = {name: violations(spec) for name, spec in specs.items()}
    assert {name: v for name, v in problems.items() if v} == {}


def test_init_containers_are_checked_too(homelab: list[Obj]) -> None:
    """The checker is not blind: loosening one init container is caught."""
    spec = copy.deepcopy(pod_specs(homelab)["Deployment/mlflow"])
    spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert any("allowPrivilegeEscalation" in v for v in violations(spec))


def test_host_path_volume_is_refused() -> None:
    spec = {"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}
    assert violations(spec) == ["volume h: type ['hostPath'] not allowed"]

"""Pod Security admission of a real API server admits every pod this repository makes.

Pod Security is enforced on Pods only (for Deployments it merely warns), so each workload's pod
template is turned into the Pod its controller would create (as the ReplicaSet controller does:
template labels and annotations plus pod-template-hash, generateName, the template's spec) and
created with a dry run in a namespace that enforces `restricted`. A deliberately non-compliant pod
is refused there and admitted in an unlabelled namespace, so the refusal is the enforcement's.
tests/test_pod_security.py checks the same rules offline; this is the API server's own verdict.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from mlflow_gitops import chart
from tests.support.apiserver import SUMMARY, ApiServer

pytestmark = pytest.mark.apiserver

NAMESPACE = "pss-restricted"
PRIVILEGED_NAMESPACE = "pss-unlabelled"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
Obj = dict[str, Any]


def pod_templates() -> list[tuple[str, Obj]]:
    """(name, pod template) of every workload in every committed render."""
    found = []
    for path in sorted(chart.RENDERED.glob("*.yaml")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            spec = doc.get("spec", {})
            if doc["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            if "template" in spec and doc["kind"] in {
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "ReplicaSet",
                "Job",
                "CronJob",
            }:
                found.append((f"{path.stem}/{doc['kind']}/{doc['metadata']['name']}", spec["template"]))
    return found


TEMPLATES = pod_templates()


def pod_from_template(name: str, template: Obj) -> Obj:
    meta = copy.deepcopy(template.get("metadata", {}))
    labels = {**meta.get("labels", {}), "pod-template-hash": "0123456789"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name}-0123456789-",
            "labels": labels,
            "annotations": meta.get("annotations", {}),
        },
        "spec": copy.deepcopy(template["spec"]),
    }


@pytest.fixture(scope="module")
def restricted_namespace(api: ApiServer) -> str:
    api.namespace(NAMESPACE, RESTRICTED)
    for _, template in TEMPLATES:  # ServiceAccount admission wants them to exist
        account = template["spec"].get("serviceAccountName", "default")
        api.ensure(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": NAMESPACE},
            }
        )
    return NAMESPACE


def test_there_are_pod_templates() -> None:
    assert TEMPLATES, "no workload with a pod template in rendered/"


@pytest.mark.parametrize(("name", "template"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_pod_of_every_workload_is_admitted_under_restricted(
    api: ApiServer, restricted_namespace: str, name: str, template: Obj
) -> None:
    pod = pod_from_template(name.rsplit("/", 1)[-1], template)
    response = api.create(pod, restricted_namespace, dry_run=True)
    assert response.status == 201, f"{name}: {response.status} {response.message}"
    assert not response.warnings, response.warnings


def non_compliant_pod() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-and-privileged"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]
        },
    }


def test_a_non_compliant_pod_is_refused_by_the_enforcement(api: ApiServer, restricted_namespace: str) -> None:
    refused = api.create(non_compliant_pod(), restricted_namespace, dry_run=True)
    assert refused.status == 403, f"expected 403 Forbidden, got {refused.status}: {refused.message}"
    assert 'violates PodSecurity "restricted:latest"' in refused.message, refused.message
    assert "privileged" in refused.message
    api.namespace(PRIVILEGED_NAMESPACE)  # no labels: the cluster default, privileged
    admitted = api.create(non_compliant_pod(), PRIVILEGED_NAMESPACE, dry_run=True)
    assert admitted.status == 201, f"the same pod without enforcement: {admitted.status} {admitted.message}"
    SUMMARY.append(
        f"Pod Security restricted: {len(TEMPLATES)} pod templates admitted, a privileged pod refused "
        f"({refused.message.split(': ', 1)[-1]})"
    )

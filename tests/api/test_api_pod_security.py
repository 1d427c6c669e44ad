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
from kubernetes.client import ApiClient, ApiException, CoreV1Api

from mlflow_gitops import chart
from tests.support import kube
from tests.support.apiserver import SUMMARY

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
def restricted_namespace(api: ApiClient) -> str:
    kube.namespace(api, NAMESPACE, RESTRICTED)
    core = CoreV1Api(api)
    # ServiceAccount admission wants them to exist
    for account in {t["spec"].get("serviceAccountName", "default") for _, t in TEMPLATES} - {"default"}:
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": account}})
    return NAMESPACE


def create_dry_run(api: ApiClient, pod: Obj, namespace: str) -> tuple[int, list[str]]:
    """Create the pod with a dry run, as its controller would; the status and the Warning headers."""
    _, status, headers = CoreV1Api(api).create_namespaced_pod_with_http_info(namespace, pod, dry_run="All")
    return status, headers.getlist("Warning")


def test_there_are_pod_templates() -> None:
    assert TEMPLATES, "no workload with a pod template in rendered/"


@pytest.mark.parametrize(("name", "template"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
def test_pod_of_every_workload_is_admitted_under_restricted(
    api: ApiClient, restricted_namespace: str, name: str, template: Obj
) -> None:
    pod = pod_from_template(name.rsplit("/", 1)[-1], template)
    try:
        status, warnings = create_dry_run(api, pod, restricted_namespace)
    except ApiException as error:
        raise AssertionError(f"{name}: {error.status} {kube.message(error)}") from None
    assert status == 201, f"{name}: {status}"
    assert not warnings, warnings


def non_compliant_pod() -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-and-privileged"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]
        },
    }


def test_a_non_compliant_pod_is_refused_by_the_enforcement(api: ApiClient, restricted_namespace: str) -> None:
    with pytest.raises(ApiException) as refused:
        create_dry_run(api, non_compliant_pod(), restricted_namespace)
    said = kube.message(refused.value)
    assert (refused.value.status, refused.value.reason) == (403, "Forbidden"), said
    assert 'violates PodSecurity "restricted:latest"' in said, said
    assert "privileged" in said
    kube.namespace(api, PRIVILEGED_NAMESPACE)  # no labels: the cluster default, privileged
    status, _ = create_dry_run(api, non_compliant_pod(), PRIVILEGED_NAMESPACE)
    assert status == 201, f"the same pod without enforcement: {status}"
    SUMMARY.append(
        f"Pod Security restricted: {len(TEMPLATES)} pod templates admitted, a privileged pod refused "
        f"({said.split(': ', 1)[-1]})"
    )

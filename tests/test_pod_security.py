"""Every pod of every render meets the "restricted" Pod Security Standard, judged offline by
k8s.io/pod-security-admission (./bin/podsecurity, mlflow_gitops/podsecurity.py): the checks the
API server's PodSecurity admission runs, at the release of the API server in tests/api, which
admits the same pods for real (tests/api/test_api_pod_security.py)."""

from __future__ import annotations

import copy

import pytest

from mlflow_gitops import podsecurity
from tests.support.manifests import Obj, find

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
MINIMAL_RESTRICTED_CONTAINER = {
    "name": "app",
    "image": "busybox",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def pods(objs: list[Obj], prefix: str = "") -> dict[str, podsecurity.Pod]:
    """Each workload's pod template and each Pod, as {"metadata", "spec"}, by kind/name."""
    found: dict[str, podsecurity.Pod] = {}
    for kind in WORKLOADS:
        for obj in find(objs, kind):
            spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
            template = spec["template"]
            found[f"{prefix}{kind}/{obj['metadata']['name']}"] = {
                "metadata": template.get("metadata", {}),
                "spec": template["spec"],
            }
    for pod in find(objs, "Pod"):
        found[f"{prefix}Pod/{pod['metadata']['name']}"] = {"metadata": pod["metadata"], "spec": pod["spec"]}
    return found


def minimal_pod(**spec: object) -> podsecurity.Pod:
    container = copy.deepcopy(MINIMAL_RESTRICTED_CONTAINER)
    return {"metadata": {"name": "probe"}, "spec": {"containers": [container], **spec}}


@pytest.fixture(scope="module")
def render_pods(homelab: list[Obj], committed_renders: dict[str, list[Obj]]) -> dict[str, podsecurity.Pod]:
    """The pods of the homelab render under test and of every committed render."""
    found = pods(homelab, "homelab (fresh)/")
    for env, objs in committed_renders.items():
        found.update(pods(objs, f"rendered/{env}.yaml/"))
    return found


def test_every_pod_of_every_render_is_restricted(render_pods: dict[str, podsecurity.Pod]) -> None:
    assert any("Deployment/mlflow" in name for name in render_pods), "no server pod template found"
    assert any(name.startswith("rendered/lab-minimal.yaml/") for name in render_pods)
    problems = podsecurity.check(render_pods)
    assert problems.keys() == render_pods.keys()
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_checks_see_init_containers(render_pods: dict[str, podsecurity.Pod]) -> None:
    """Not blind: loosening one init container of the server is refused, naming the container."""
    name = next(n for n in render_pods if n.endswith("Deployment/mlflow"))
    pod = copy.deepcopy(render_pods[name])
    init = pod["spec"]["initContainers"][0]
    init["securityContext"]["allowPrivilegeEscalation"] = True
    (problem,) = podsecurity.check({"loosened": pod})["loosened"]
    assert problem.startswith("allowPrivilegeEscalation != false") and f'"{init["name"]}"' in problem


def test_a_minimal_restricted_pod_is_allowed() -> None:
    """The reference the refusals below differ from by one field."""
    assert podsecurity.check({"minimal": minimal_pod()}) == {"minimal": []}


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda p: p["spec"].update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
            "restricted volume types",
        ),
        (lambda p: p["spec"].update(hostNetwork=True), "host namespaces"),
        # What a hand-written restricted check easily misses; the library refuses them all.
        (
            lambda p: p["spec"]["containers"][0]["securityContext"].update(
                appArmorProfile={"type": "Unconfined"}
            ),
            "forbidden AppArmor profile",
        ),
        (
            lambda p: p["metadata"].update(
                annotations={"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
            ),
            "forbidden AppArmor profile",
        ),
        (lambda p: p["spec"].update(securityContext={"seLinuxOptions": {"type": "spc_t"}}), "seLinuxOptions"),
        (
            lambda p: p["spec"].update(
                securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}
            ),
            "forbidden sysctls",
        ),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser=0"),
    ],
    ids=[
        "hostPath",
        "hostNetwork",
        "apparmor-field",
        "apparmor-annotation",
        "selinux-spc_t",
        "unsafe-sysctl",
        "root",
    ],
)
def test_a_pod_that_breaks_one_rule_is_refused(edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    pod = minimal_pod()
    edit(pod)
    (problem,) = podsecurity.check({"edited": pod})["edited"]
    assert problem.startswith(reason), problem


def test_baseline_allows_what_only_restricted_refuses() -> None:
    """The level is passed through: a pod without the restricted settings is baseline."""
    pod: podsecurity.Pod = {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
    assert podsecurity.check({"p": pod}, level="baseline") == {"p": []}
    assert podsecurity.check({"p": pod})["p"]


def test_a_misspelt_field_is_an_error_naming_it() -> None:
    pod = minimal_pod()
    pod["spec"]["containers"][0]["securityContxt"] = pod["spec"]["containers"][0].pop("securityContext")
    with pytest.raises(ValueError, match=r'typo: .*unknown field "securityContxt"'):
        podsecurity.check({"typo": pod})


def test_an_unknown_level_is_an_error_naming_the_levels() -> None:
    with pytest.raises(ValueError, match=r'-level "strict": must be one of privileged, baseline, restricted'):
        podsecurity.check({}, level="strict")

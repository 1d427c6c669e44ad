"""The release's life in a real API server: `helm install`, a no-op `helm upgrade`, an upgrade that
changes one value, `helm rollback` and `helm uninstall`, with values/homelab.yaml.

No controller runs, so nothing becomes Ready and helm waits for hooks only (`--wait=hookOnly`, Helm
4's default; `--wait=false` is deprecated there); what is checked is what the API server stores.
Each step compares every object of the release (`helm get manifest`) before and after by
resourceVersion and generation: the API server bumps resourceVersion on every write and leaves it
alone on a no-op, so "written" is exact, not a diff of selected fields. Helm 4 applies server-side,
and the API server persists one server-side re-apply of a freshly created PersistentVolumeClaim
without any visible change (a known edge case of no-op applies, kubernetes/kubernetes#121404): the
no-op upgrade is therefore checked by content and generation, the later steps by resourceVersion.
The hook Secret of the upstream chart (pre-install,pre-upgrade, before-hook-creation) is deleted
and recreated by helm on every upgrade by design, and is checked apart.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from mlflow_gitops import chart
from tests.support import kube
from tests.support.apiserver import ApiServer

pytestmark = [pytest.mark.apiserver, pytest.mark.upstream]

RELEASE = chart.RELEASE
HOMELAB = chart.VALUES / "homelab.yaml"
Key = tuple[str, str, str]  # kind, namespace, name
Snapshot = dict[Key, dict[str, Any]]
WORKERS = "mlflow.extraArgs.workers"


class Helm:
    def __init__(self, api: ApiServer, namespace: str, home: Path) -> None:
        self.api, self.namespace = api, namespace
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        cmd = [chart.helm(), *args, "--kubeconfig", str(self.api.kubeconfig), "--namespace", self.namespace]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=300, check=False)
        assert out.returncode == 0, f"`helm {' '.join(args)}` failed:\n{out.stderr}"
        return out.stdout

    def objects(self, what: str = "manifest") -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self(*["get", what, RELEASE])) if d]


def key(obj: dict[str, Any], namespace: str) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", namespace), obj["metadata"]["name"]


def snapshot(dynamic: DynamicClient, manifest: list[dict[str, Any]], namespace: str) -> Snapshot:
    """Every object of the manifest as the API server stores it; absent objects are left out."""
    found: Snapshot = {}
    for obj in manifest:
        if (stored := kube.stored(dynamic, obj, namespace)) is not None:
            found[key(obj, namespace)] = stored
    return found


def writes(before: Snapshot, after: Snapshot) -> set[Key]:
    """Objects the API server wrote between the snapshots (new resourceVersion, uid or generation)."""

    def stamp(o: dict[str, Any]) -> tuple[Any, ...]:
        meta = o["metadata"]
        return meta["uid"], meta["resourceVersion"], meta.get("generation")

    return {k for k in before.keys() & after.keys() if stamp(before[k]) != stamp(after[k])}


def changes(before: Snapshot, after: Snapshot) -> set[Key]:
    """Objects whose stored form differs other than by resourceVersion and field ownership (their uid,
    generation, labels, annotations, spec...): what a write that changed something leaves."""

    def visible(o: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in o["metadata"].items() if k not in ("resourceVersion", "managedFields")}
        return {**o, "metadata": meta}

    return {k for k in before.keys() & after.keys() if visible(before[k]) != visible(after[k])}


def content(obj: dict[str, Any]) -> dict[str, Any]:
    """What a release sets on an object, without what the API server maintains."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def rendered_changes(set_string: str) -> set[Key]:
    """The objects whose render differs when one value changes: what an upgrade should write."""
    base = chart.template([HOMELAB]).documents
    changed = chart.template([HOMELAB], extra_args=["--set-string", set_string]).documents
    ns = chart.NAMESPACE
    base_by_key = {key(d, ns): d for d in base}
    changed_by_key = {key(d, ns): d for d in changed}
    assert base_by_key.keys() == changed_by_key.keys(), (
        "the value should change objects, not add or remove them"
    )
    return {k for k in base_by_key if base_by_key[k] != changed_by_key[k]}


def hooks_of(helm: Helm) -> set[Key]:
    return {key(d, helm.namespace) for d in helm.objects("hooks") if d.get("kind")}


def test_install_upgrade_rollback_uninstall(
    apiserver: ApiServer, dynamic: DynamicClient, mlflow_namespace: str, tmp_path: Path
) -> None:
    helm = Helm(apiserver, mlflow_namespace, tmp_path / "helm")
    chart_dir, values = str(chart.CHART), str(HOMELAB)

    # 1. install: every object of the manifest is stored.
    helm("install", RELEASE, chart_dir, "-f", values, "--wait=hookOnly")
    manifest = helm.objects()
    installed = snapshot(dynamic, manifest, mlflow_namespace)
    missing = {key(o, mlflow_namespace) for o in manifest} - installed.keys()
    assert not missing, f"helm install reported success but the API server has no {sorted(missing)}"
    hooks = hooks_of(helm)
    hook_objects = {
        k: o for k, o in snapshot(dynamic, helm.objects("hooks"), mlflow_namespace).items() if k in hooks
    }
    assert ("Secret", mlflow_namespace, "mlflow-flask-server-secret-key") in hook_objects, (
        "pre-install hook Secret"
    )

    # 2. upgrade with the same values: no object changes (content or generation).
    helm("upgrade", RELEASE, chart_dir, "-f", values, "--wait=hookOnly")
    same = snapshot(dynamic, manifest, mlflow_namespace)
    assert same.keys() == installed.keys()
    assert not changes(installed, same), f"a no-op upgrade changed {sorted(changes(installed, same))}"
    for k, hook in snapshot(dynamic, helm.objects("hooks"), mlflow_namespace).items():
        if k in hook_objects:  # recreated (before-hook-creation) with the same content
            assert content(hook) == content(hook_objects[k]), f"hook {k} changed content on a no-op upgrade"

    # 3. upgrade with one changed value: exactly the objects whose render changes are written.
    workers = str(_workers(installed) + 1)
    expected = rendered_changes(f"{WORKERS}={workers}")
    assert ("Deployment", mlflow_namespace, "mlflow") in expected
    helm(
        "upgrade", RELEASE, chart_dir, "-f", values, "--set-string", f"{WORKERS}={workers}", "--wait=hookOnly"
    )
    changed = snapshot(dynamic, manifest, mlflow_namespace)
    assert writes(same, changed) == expected, "an upgrade must write exactly the objects whose render changed"
    deployment = changed[("Deployment", mlflow_namespace, "mlflow")]
    assert (
        deployment["metadata"]["generation"]
        == same[("Deployment", mlflow_namespace, "mlflow")]["metadata"]["generation"] + 1
    )
    assert f"--workers={workers}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    # 4. rollback to revision 2: the changed objects get their content back, the others are untouched.
    helm("rollback", RELEASE, "2", "--wait=hookOnly")
    rolled = snapshot(dynamic, manifest, mlflow_namespace)
    assert writes(changed, rolled) == expected, "a rollback must write back exactly what the upgrade changed"
    for k in expected:
        assert content(rolled[k]) == content(same[k]), f"{k} after rollback differs from revision 2"
    history = yaml.safe_load(helm("history", RELEASE, "-o", "yaml"))
    assert [h["revision"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["description"] == "Rollback to 2"

    # 5. uninstall: the release and its objects are gone, except those annotated to be kept.
    keep = {
        key(o, mlflow_namespace)
        for o in manifest
        if o["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
    }
    assert {
        ("PersistentVolumeClaim", mlflow_namespace, "mlflow-artifacts"),
        ("Cluster", mlflow_namespace, "mlflow-postgres"),
    } <= keep
    helm("uninstall", RELEASE, "--wait=hookOnly")
    assert RELEASE not in helm("list", "-q").split()
    left = snapshot(dynamic, manifest, mlflow_namespace)
    assert left.keys() == keep, f"after uninstall expected only {sorted(keep)}, found {sorted(left)}"
    for k in keep:
        assert left[k]["metadata"]["uid"] == installed[k]["metadata"]["uid"], f"{k} was recreated"
        assert "deletionTimestamp" not in left[k]["metadata"], f"{k} is being deleted"


def _workers(objects: Snapshot) -> int:
    deployment = next(o for k, o in objects.items() if k[0] == "Deployment" and k[2] == "mlflow")
    for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"]:
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
    raise AssertionError("the mlflow container has no --workers argument")

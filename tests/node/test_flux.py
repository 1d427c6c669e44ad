"""Flux on the node delivers the homelab: its source-, kustomize- and helm-controller (./bin, from
their Go modules; mlflow_gitops.node.flux) reconcile the root kustomization.yaml's objects from a
Git server in the node's namespace serving this repository's commit, to a Ready HelmRelease and a
Ready MLflow.

The committed deploy/ objects are used as they are: the entry point (the root kustomization.yaml,
built by the Flux Kustomization of deploy/flux/ks.yaml) and its GitRepository, HelmRelease and
values ConfigMap. What a lab cannot have is changed by the Kustomization's own `spec.patches`
(LAB_PATCHES, each with its reason), and applied the same way to the GitRepository the test
applies once first (deploy/README.md: the entry point is applied once before ks.yaml). The rest
of the cluster (CloudNativePG, storage classes, the Secrets External Secrets would write) is
prepared as tests/node/test_helm_install.py does it.

Run by `make node-test` (marked `node`, outside `make test`).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi

from mlflow_gitops import chart
from mlflow_gitops.node import addons, api, flux, gobuild, homelab, operator, render_images
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.versions import ROOT
from tests.node import kube
from tests.node.conftest import SUMMARY
from tests.support.ci import unavailable

pytestmark = [pytest.mark.node, pytest.mark.upstream]

OVERRIDES = Path(__file__).with_name("lab-overrides.yaml")
REPOSITORY = yaml.safe_load((ROOT / "deploy" / "repository" / "repository.yaml").read_text())["data"]
KS = yaml.safe_load((ROOT / "deploy" / "flux" / "ks.yaml").read_text())
SOURCE, CHART_SOURCE, LAB_VALUES = "mlflow-gitops", "mlflow-chart", "mlflow-lab-overrides"
# (group, version, namespace, plural) of the objects read back, for CustomObjectsApi
GITREPOS = ("source.toolkit.fluxcd.io", "v1", NAMESPACE, "gitrepositories")
HELMCHARTS = ("source.toolkit.fluxcd.io", "v1", NAMESPACE, "helmcharts")
HELMRELEASES = ("helm.toolkit.fluxcd.io", "v2", NAMESPACE, "helmreleases")
KUSTOMIZATIONS = ("kustomize.toolkit.fluxcd.io", "v1", KS["metadata"]["namespace"], "kustomizations")
CLUSTERS = ("postgresql.cnpg.io", "v1", NAMESPACE, "clusters")
Ref = tuple[str, str, str, str]


def lab_patches(git_url: str) -> list[dict[str, Any]]:
    """The lab's differences from the committed objects, as Flux Kustomization patches (JSON 6902)."""
    return [
        # No network: the repository is served from the node (the commit checked out here, on the
        # committed branch); deploy/repository/repository.yaml names GitHub.
        {"target": {"kind": "GitRepository", "name": SOURCE}, "patch": [
            {"op": "replace", "path": "/spec/url", "value": git_url},
            # No chart repository: source-controller would download the upstream chart Chart.lock
            # pins; the same chart, from a second served repository, is put where the dependency
            # goes, so the dependency manager finds it present.
            {"op": "add", "path": "/spec/include", "value": [
                {"repository": {"name": CHART_SOURCE}, "toPath": "charts/mlflow-stack/charts/mlflow"},
            ]},
        ]},
        # What tests/node/lab-overrides.yaml overrides for `helm install`, as a second values source.
        {"target": {"kind": "HelmRelease", "name": "mlflow"}, "patch": [
            {"op": "add", "path": "/spec/valuesFrom/-",
             "value": {"kind": "ConfigMap", "name": LAB_VALUES, "valuesKey": "values.yaml"}},
        ]},
    ]  # fmt: skip


def patched(obj: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """`obj` with the JSON 6902 operations (add, replace) of the patches whose target it matches."""
    obj = copy.deepcopy(obj)
    for entry in patches:
        if any(obj.get(k, obj["metadata"].get(k)) != v for k, v in entry["target"].items()):
            continue
        for op in entry["patch"]:
            *parents, last = op["path"].strip("/").split("/")
            node = obj
            for key in parents:
                node = node[key]
            if op["op"] not in ("add", "replace"):
                raise ValueError(f"patch op {op['op']!r}: allowed add, replace")
            if last == "-":
                node.append(copy.deepcopy(op["value"]))
            else:
                node[last] = copy.deepcopy(op["value"])
    return obj


def timed(step: str, action) -> Any:
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"flux: {step}: {time.monotonic() - started:.1f} s")
    return result


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')[:300]}" for c in obj.get("status", {}).get("conditions", [])}  # fmt: skip


def read(client: ApiClient, ref: Ref, name: str) -> dict[str, Any]:
    return CustomObjectsApi(client).get_namespaced_custom_object(*ref, name)


def ready(
    client: ApiClient, ref: Ref, name: str, revision: str | None = None, flux_object: bool = True
) -> tuple[bool, str]:
    """Ready=True; for Flux's objects also for their latest generation (and at `revision`)."""
    body = read(client, ref, name)
    found = conditions(body)
    latest = not flux_object or body["status"].get("observedGeneration") == body["metadata"]["generation"]
    done = found.get("Ready", "").startswith("True") and latest
    if revision is not None:
        done = done and revision in (
            body["status"].get("artifact", {}).get("revision"),
            body["status"].get("lastAppliedRevision"),
        )
    return done, f"conditions {found}"


@dataclass
class Delivery:
    node: Node
    controllers: flux.Controllers
    git_server: flux.GitServer
    commit: str
    revision: str  # what Flux reports for the commit: <branch>@sha1:<hash>
    patches: list[dict[str, Any]]

    def wait(self, step: str, probe: Callable[[], tuple[bool, str]], timeout: float) -> None:
        """Until `probe` is done; on a timeout the controllers' state, logs and the last Git requests."""
        try:
            timed(step, lambda: api.wait_for(step, probe, timeout, 2))
        except TimeoutError as error:
            dead = {k: v for k, v in self.controllers.alive().items() if v is not None}
            logs = "\n".join(self.controllers.tail(name, 15) for name in flux.CONTROLLERS)
            raise AssertionError(f"{error}\nexited: {dead}\n{logs}\ngit: {self.git_server.requests[-5:]}") from error  # fmt: skip

    def ready(
        self, step: str, ref: Ref, name: str, timeout: float, revision: str | None = None
    ) -> dict[str, Any]:
        """Until the Flux object is Ready at its latest generation (and `revision`); returns it."""
        self.wait(step, lambda: ready(self.node.client, ref, name, revision), timeout)
        return read(self.node.client, ref, name)


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(gobuild.BIN / "kustomize"), "build", str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kustomize build exited {done.returncode}: {done.stderr}"
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def prepare_cluster(node: Node) -> None:
    """CloudNativePG, the storage classes and the Secrets, as tests/node/test_helm_install.py does."""
    client = node.client
    timed("operator images", lambda: operator.import_images(node.layout.containerd_socket))
    for step, seconds in operator.install(client, operator.postgres_image()).items():
        SUMMARY.append(f"flux: {step}: {seconds:.1f} s")
    homelab.create_storage(client, node.run_dir)


def remove(node: Node, controllers: flux.Controllers) -> None:
    """Delete the Kustomization (it prunes the HelmRelease: helm-controller uninstalls), then the
    namespace, and the volumes its claims left Released (with their data), so a later install on
    the same node starts from empty volumes."""
    client = node.client
    core, custom = CoreV1Api(client), CustomObjectsApi(client)
    name = KS["metadata"]["name"]
    kube.absent(lambda: custom.delete_namespaced_custom_object(*KUSTOMIZATIONS, name))
    kube.wait_deleted("Kustomization", lambda: read(client, KUSTOMIZATIONS, name), 900, 2)
    kube.absent(lambda: custom.delete_namespaced_custom_object(*GITREPOS, CHART_SOURCE))
    kube.wait_deleted("GitRepository", lambda: read(client, GITREPOS, CHART_SOURCE), 300, 2)
    controllers.stop()
    for ref in (GITREPOS, HELMCHARTS, HELMRELEASES):  # left by a failed step: unblock
        for obj in custom.list_namespaced_custom_object(*ref)["items"]:
            custom.patch_namespaced_custom_object(
                *ref, obj["metadata"]["name"], {"metadata": {"finalizers": None}},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
    kube.absent(lambda: core.delete_namespace(NAMESPACE))
    kube.wait_deleted(f"namespace {NAMESPACE}", lambda: core.read_namespace(NAMESPACE), 600, 2)
    for pv in core.list_persistent_volume().items:
        if pv.spec.claim_ref and pv.spec.claim_ref.namespace == NAMESPACE:
            core.delete_persistent_volume(pv.metadata.name)
            source = pv.spec.local or pv.spec.host_path
            if source and source.path:
                shutil.rmtree(source.path, ignore_errors=True)
    homelab.create_storage(client, node.run_dir)  # the deleted volumes again, empty


@pytest.fixture(scope="module")
def delivery(node: Node) -> Iterator[Delivery]:
    if missing := addons.missing(addons.FLUX):
        unavailable(f"needs {', '.join(missing)}: run `make node-flux`")
    upstream = chart.CHART / "charts" / "mlflow"
    repos = node.run_dir / "git"
    branch = REPOSITORY["branch"]
    commit = timed("bare clone of the commit", lambda: flux.bare_clone(ROOT, repos / f"{SOURCE}.git", branch))
    flux.bare_repository_of(upstream, repos / f"{CHART_SOURCE}.git", "main")
    prepare_cluster(node)
    names = timed("Flux CRDs Established", lambda: flux.install_crds(node.client))
    SUMMARY.append(f"flux: CRDs: {', '.join(names)}")
    with flux.GitServer(node, repos) as git_server:
        controllers = flux.Controllers(node)
        try:
            timed("controllers ready", controllers.start)
            patches = lab_patches(git_server.url(f"{SOURCE}.git"))
            yield Delivery(node, controllers, git_server, commit, f"{branch}@sha1:{commit}", patches)
        finally:
            try:
                timed("removed", lambda: remove(node, controllers))
            finally:
                controllers.stop()


def test_flux_controllers_built_from_their_go_modules_run_on_the_node(delivery: Delivery) -> None:
    assert delivery.controllers.alive() == dict.fromkeys(flux.CONTROLLERS), delivery.controllers.alive()
    for name in flux.CONTROLLERS:
        tool = flux.addons.by_name(name)
        assert gobuild.module_version(tool.path, tool.module) == tool.version, name
        SUMMARY.append(f"flux: {name} {tool.version} ready")


def test_the_git_repository_of_the_entry_point_is_ready_at_the_served_commit(delivery: Delivery) -> None:
    client, server = delivery.node.client, delivery.git_server
    checkout = delivery.node.run_dir / "git" / "checkout"
    flux.git("clone", "--quiet", str(server.root / f"{SOURCE}.git"), str(checkout))
    objects = kustomize_build(checkout)  # the entry point at the commit, as Flux builds it
    (namespace,) = [obj for obj in objects if obj["kind"] == "Namespace"]
    (source,) = [obj for obj in objects if obj["kind"] == "GitRepository"]
    api.apply(client, namespace)
    for line in homelab.create_secrets(client, NAMESPACE):
        SUMMARY.append(f"flux: {line}")
    api.apply(client, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LAB_VALUES, "namespace": NAMESPACE},
        "data": {"values.yaml": OVERRIDES.read_text()},
    })  # fmt: skip
    api.apply(client, {
        "apiVersion": source["apiVersion"], "kind": "GitRepository",
        "metadata": {"name": CHART_SOURCE, "namespace": NAMESPACE},
        "spec": {"interval": "1h", "url": server.url(f"{CHART_SOURCE}.git"), "ref": {"branch": "main"}},
    })  # fmt: skip
    delivery.ready("upstream chart GitRepository Ready", GITREPOS, CHART_SOURCE, 300)
    api.apply(client, patched(source, delivery.patches))
    found = delivery.ready("GitRepository Ready", GITREPOS, SOURCE, 300, delivery.revision)
    assert found["status"]["artifact"]["revision"] == delivery.revision, found["status"]
    assert [i["repository"]["name"] for i in found["spec"]["include"]] == [CHART_SOURCE]
    SUMMARY.append(f"flux: GitRepository {SOURCE}: {delivery.revision}; git requests {len(server.requests)}")


def test_the_kustomization_of_the_root_entry_point_delivers_a_ready_helmrelease_and_mlflow(
    delivery: Delivery,
) -> None:
    client = delivery.node.client
    ks = copy.deepcopy(KS)
    ks["spec"]["patches"] = [
        {"target": p["target"], "patch": yaml.safe_dump(p["patch"])} for p in delivery.patches
    ]
    api.apply(
        client, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ks["metadata"]["namespace"]}}
    )
    api.apply(client, ks)
    release = delivery.ready("HelmRelease Ready", HELMRELEASES, "mlflow", 1500)
    assert [v["name"] for v in release["spec"]["valuesFrom"]][-1] == LAB_VALUES, release["spec"]["valuesFrom"]
    assert release["spec"]["valuesFrom"][0]["name"].startswith("mlflow-values-"), release["spec"][
        "valuesFrom"
    ]
    history = release["status"].get("history", [{}])[0]
    SUMMARY.append(f"flux: HelmRelease mlflow: chart {history.get('chartName')} {history.get('chartVersion')}, {history.get('status')}")  # fmt: skip
    found = delivery.ready(
        "Kustomization Ready", KUSTOMIZATIONS, KS["metadata"]["name"], 900, delivery.revision
    )
    assert found["status"]["lastAppliedRevision"] == delivery.revision, found["status"]
    inventory = sorted(e["id"] for e in found["status"].get("inventory", {}).get("entries", []))
    SUMMARY.append(f"flux: Kustomization applied {inventory}")
    assert any(i.endswith("_HelmRelease") for i in inventory) and any(
        "_mlflow-values-" in i for i in inventory
    )

    apps = AppsV1Api(client)

    def deployment_ready() -> tuple[bool, str]:
        found = apps.read_namespaced_deployment("mlflow", NAMESPACE)
        return (found.status.ready_replicas or 0) >= found.spec.replicas, f"{found.status}"

    delivery.wait("MLflow Deployment ready", deployment_ready, 600)
    deployment = apps.read_namespaced_deployment("mlflow", NAMESPACE)
    assert (deployment.metadata.labels or {}).get("helm.toolkit.fluxcd.io/name") == "mlflow"
    image = deployment.spec.template.spec.containers[0].image
    assert image.endswith(render_images.reference("mlflow").removeprefix("docker.io/")), image
    cluster = homelab.render().one("Cluster")["metadata"]["name"]
    delivery.wait("Cluster Ready", lambda: ready(client, CLUSTERS, cluster, flux_object=False), 600)

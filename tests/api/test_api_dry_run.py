"""What the API server itself says about every object this repository ships.

kubeconform checks the OpenAPI schemas; only an API server runs the rest: the CEL rules of the CRDs
(`x-kubernetes-validations`), the built-in validation of core kinds, the admission plugins (Pod
Security on the pods). Every object of every render (rendered/*.yaml) and of every kustomize entry
point (the root kustomization.yaml and the folders under deploy/, when they exist) and every
documented example manifest (docs/examples/*.yaml) must be accepted
by a server-side dry-run apply into namespace `mlflow`; hand-made wrong objects must be refused,
which proves the rules are live rather than the server accepting anything.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, ApiException, CoreV1Api
from kubernetes.dynamic import DynamicClient

from mlflow_gitops import chart
from tests.support import kube
from tests.support.apiserver import SUMMARY
from tests.support.crds import cel_rules, crds_of_schemas

pytestmark = pytest.mark.apiserver

ROOT = chart.ROOT
DEPLOY = ROOT / "deploy"
Obj = dict[str, Any]
DRY_RUN: dict[str, int] = {}  # source -> objects dry-run


@dataclass(frozen=True)
class Source:
    name: str
    load: Callable[[], list[Obj]]


def documents(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize_build(path: Path) -> list[Obj]:
    # No load restriction, as Flux's kustomize-controller builds (deploy/flux/<env> reads values/).
    cmd = [str(chart.BIN / "kustomize"), "build", str(path), "--load-restrictor", "LoadRestrictionsNone"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kustomize build {path}: {out.stderr}"
    return documents(out.stdout)


def is_kustomization(path: Path) -> bool:
    kind = (yaml.safe_load(path.read_text()) or {}).get("kind", "Kustomization")
    return kind == "Kustomization"  # a Component is built only as part of a Kustomization


def sources() -> list[Source]:
    """Renders, kustomize entry points, and loose manifests under deploy/ (folders without a
    kustomization.yaml, e.g. deploy/flux/ks.yaml); whatever of these exists."""
    found = [
        Source(f"rendered/{p.name}", lambda p=p: documents(p.read_text()))
        for p in sorted(chart.RENDERED.glob("*.yaml"))
    ]
    roots = [ROOT / "kustomization.yaml"] if (ROOT / "kustomization.yaml").exists() else []
    roots += sorted(DEPLOY.rglob("kustomization.yaml")) if DEPLOY.is_dir() else []
    for path in roots:
        if is_kustomization(path):
            where = path.parent.relative_to(ROOT).as_posix() or "."
            found.append(Source(f"kustomize build {where}", lambda d=path.parent: kustomize_build(d)))
    if DEPLOY.is_dir():
        for folder in sorted({DEPLOY, *(p for p in DEPLOY.rglob("*") if p.is_dir())}):
            if any(
                (d / "kustomization.yaml").exists()
                for d in (folder, *folder.parents)
                if d == DEPLOY or DEPLOY in d.parents
            ):
                continue  # part of a kustomization (or a component of one)
            for path in sorted(folder.glob("*.yaml")):
                docs = documents(path.read_text())
                if docs and all("apiVersion" in d and "kind" in d for d in docs):
                    found.append(
                        Source(path.relative_to(ROOT).as_posix(), lambda p=path: documents(p.read_text()))
                    )
    # The documented examples (docs/pipelines.md): what a user copies must be accepted.
    for path in sorted((ROOT / "docs" / "examples").glob("*.yaml")):
        found.append(Source(path.relative_to(ROOT).as_posix(), lambda p=path: documents(p.read_text())))
    # What only a switch renders, in no environment's render: the pre-upgrade backup hook's objects.
    for name, switches in SWITCHED.items():
        found.append(Source(name, lambda s=switches: switched(s)))
    return found


def switched(switches: list[str]) -> list[Obj]:
    return chart.template_own([chart.VALUES / "homelab.yaml"], set_values=switches).documents


SWITCHED = {
    "homelab + backup.enabled": ["backup.enabled=true", "backup.volumeSnapshotClass=longhorn-snapshot"],
}


SOURCES = sources()


def namespaces_of(objects: list[Obj]) -> set[str]:
    return {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}


def service_accounts_of_pods(objects: list[Obj]) -> set[str]:
    return {o["spec"].get("serviceAccountName", "default") for o in objects if o["kind"] == "Pod"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_every_object_is_accepted_by_a_server_side_dry_run(
    api: ApiClient, dynamic: DynamicClient, mlflow_namespace: str, source: Source
) -> None:
    objects = source.load()
    assert objects, f"{source.name} has no objects"
    for namespace in namespaces_of(objects) - {mlflow_namespace}:
        kube.namespace(api, namespace)  # e.g. argocd, flux-system: the cluster's, not this repository's
    # Pods are admitted only when their ServiceAccount exists (ServiceAccount admission); the ones a
    # source creates itself would exist by then in a real apply. Create them for this test only.
    core, created = CoreV1Api(api), []
    existing = {sa.metadata.name for sa in core.list_namespaced_service_account(mlflow_namespace).items}
    for name in service_accounts_of_pods(objects) - existing:
        core.create_namespaced_service_account(mlflow_namespace, {"metadata": {"name": name}})
        created.append(name)
    refused, warned, stored = [], [], []
    try:
        for obj in objects:
            existed = kube.stored(dynamic, obj, mlflow_namespace) is not None
            what = f"{obj['kind']} {obj['metadata']['name']}"
            try:
                _, warnings = kube.apply(dynamic, obj, mlflow_namespace, dry_run=True)
            except ApiException as error:
                refused.append(f"{what}: {error.status} {kube.message(error)}")
                continue
            warned += [f"{what}: {w}" for w in warnings]
            if not existed and kube.stored(dynamic, obj, mlflow_namespace) is not None:
                stored.append(what)
    finally:
        for name in created:
            core.delete_namespaced_service_account(name, mlflow_namespace)
    DRY_RUN[source.name] = len(objects)
    assert not refused, f"{source.name}: the API server refused:\n" + "\n".join(refused)
    assert not warned, f"{source.name}: the API server warned (e.g. Pod Security):\n" + "\n".join(warned)
    assert not stored, f"{source.name}: a dry run stored {stored}"


def test_summary_of_the_dry_runs() -> None:
    """Runs after the parametrized test above: prints what was dry-run."""
    if not DRY_RUN:
        pytest.skip("no dry run ran")
    SUMMARY.append(
        f"server-side dry-run apply: {sum(DRY_RUN.values())} objects from {len(DRY_RUN)} sources, all accepted ("
        + ", ".join(f"{name}: {count}" for name, count in DRY_RUN.items())
        + ")"
    )


# --- wrong objects are refused: the rules are live ------------------------------------------------


def committed(kind: str, name: str | None = None) -> Obj:
    for doc in documents((chart.RENDERED / "homelab.yaml").read_text()):
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name):
            return copy.deepcopy(doc)
    raise AssertionError(f"rendered/homelab.yaml has no {kind} {name or ''}")


def with_change(obj: Obj, change: Callable[[Obj], None]) -> Obj:
    change(obj)
    return obj


def _path_prefix_without_slash(route: Obj) -> None:
    route["spec"]["rules"][0]["matches"][0]["path"] = {"type": "PathPrefix", "value": "api"}


def _backend_timeout_over_request(route: Obj) -> None:
    route["spec"]["rules"][0]["timeouts"] = {"request": "30m", "backendRequest": "1h"}


def _no_instances(cluster: Obj) -> None:
    cluster["spec"]["instances"] = 0


def _image_name_and_catalog(cluster: Obj) -> None:
    cluster["spec"]["imageName"] = "ghcr.io/cloudnative-pg/postgresql:17"
    cluster["spec"]["imageCatalogRef"] = {
        "apiGroup": "postgresql.cnpg.io",
        "kind": "ClusterImageCatalog",
        "name": "postgresql",
        "major": 17,
    }


def _unknown_creation_policy(secret: Obj) -> None:
    secret["spec"]["target"]["creationPolicy"] = "Sometimes"


def built(kind: str) -> Obj:
    """The first object of a kind in `kustomize build .` (the Flux entry point)."""
    return copy.deepcopy(next(o for o in kustomize_build(ROOT) if o["kind"] == kind))


def _chart_and_chart_ref(release: Obj) -> None:
    release["spec"]["chartRef"] = {"kind": "OCIRepository", "name": "mlflow"}


def _service_account_without_provider(repository: Obj) -> None:
    repository["spec"]["serviceAccountName"] = "mlflow"


def flux_kustomization() -> Obj:
    return documents((DEPLOY / "flux" / "ks.yaml").read_text())[0]


def _two_kubeconfig_refs(kustomization: Obj) -> None:
    kustomization["spec"]["kubeConfig"] = {"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}


# (id, object, what the refusal says, whether an x-kubernetes-validations (CEL) rule refuses it)
WRONG: list[tuple[str, Callable[[], Obj], str, bool]] = [
    ("httproute-pathprefix-not-absolute", lambda: with_change(committed("HTTPRoute"), _path_prefix_without_slash),
     "must be an absolute path", True),
    ("httproute-backendrequest-over-request", lambda: with_change(committed("HTTPRoute"), _backend_timeout_over_request),
     "backendRequest timeout cannot be longer than request timeout", True),
    ("cnpg-cluster-imagename-and-catalog", lambda: with_change(committed("Cluster"), _image_name_and_catalog),
     "imageName and imageCatalogRef are mutually exclusive", True),
    ("cnpg-cluster-zero-instances", lambda: with_change(committed("Cluster"), _no_instances),
     "spec.instances: Invalid value: 0: spec.instances in body should be greater than or equal to 1", False),
    ("externalsecret-unknown-creationpolicy", lambda: with_change(committed("ExternalSecret"), _unknown_creation_policy),
     'spec.target.creationPolicy: Unsupported value: "Sometimes"', False),
]  # fmt: skip
if (ROOT / "kustomization.yaml").exists():
    WRONG += [
        ("helmrelease-chart-and-chartref", lambda: with_change(built("HelmRelease"), _chart_and_chart_ref),
         "either chart or chartRef must be set", True),
        ("gitrepository-serviceaccount-without-provider", lambda: with_change(built("GitRepository"), _service_account_without_provider),
         "serviceAccountName can only be set when provider is 'azure' or 'aws'", True),
    ]  # fmt: skip
if (DEPLOY / "flux" / "ks.yaml").exists():
    WRONG.append(
        ("flux-kustomization-two-kubeconfig-refs", lambda: with_change(flux_kustomization(), _two_kubeconfig_refs),
         "exactly one of spec.kubeConfig.configMapRef or spec.kubeConfig.secretRef must be specified", True),
    )  # fmt: skip


@pytest.mark.parametrize(("make", "says", "cel"), [w[1:] for w in WRONG], ids=[w[0] for w in WRONG])
def test_a_wrong_object_is_refused(
    dynamic: DynamicClient,
    crds: list[Obj],
    mlflow_namespace: str,
    make: Callable[[], Obj],
    says: str,
    cel: bool,
) -> None:
    obj = make()
    with pytest.raises(ApiException) as refused:
        kube.apply(dynamic, obj, mlflow_namespace, dry_run=True)
    said = kube.message(refused.value)
    assert (refused.value.status, refused.value.reason) == (422, "Unprocessable Entity"), said
    assert says in said, said
    crd = next(
        c
        for c in crds
        if c["spec"]["names"]["kind"] == obj["kind"] and c["spec"]["group"] == obj["apiVersion"].split("/")[0]
    )
    messages = [rule.get("message", rule["rule"]) for rule in cel_rules(crd)]
    from_cel = any(says in message for message in messages)
    assert from_cel == cel, (
        f"the refusal {'should' if cel else 'should not'} be a CEL rule's message: {says!r}"
    )


def test_the_installed_crds_keep_every_cel_rule_of_their_source(crds: list[Obj]) -> None:
    source = {crd["metadata"]["name"]: len(cel_rules(crd)) for crd in crds_of_schemas()}
    installed = {crd["metadata"]["name"]: len(cel_rules(crd)) for crd in crds}
    assert installed == source
    assert installed["httproutes.gateway.networking.k8s.io"] > 0
    exercised = sum(1 for w in WRONG if w[3])
    SUMMARY.append(
        f"wrong objects refused: {len(WRONG)} ({exercised} by the CRDs' CEL rules, "
        f"{len(WRONG) - exercised} by their OpenAPI schema)"
    )

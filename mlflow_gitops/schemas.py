"""Generate schemas/: the JSON schemas kubeconform validates the rendered manifests against.

Everything is read from local copies, so no schema is ever fetched while validating:

* core kinds from the kubernetes-validate package in the venv (its -local-strict schemas), with
  the definitions each kind needs copied into the file and every `$ref` made local;
* custom resources from the CRD YAMLs inside Go modules at the versions of tools/versions.env,
  downloaded with `go mod download` (module cache or the Go module proxy); for a module that ships
  only the Go types of its API (Flux's helm-controller/api), the CRD is generated from them with
  controller-gen, pinned, as the controller's own `make manifests` does.

The layout is the one kubeconform expects for SCHEMA_LOCATION below. Objects reject unknown fields
(strict); descriptions are dropped to keep the files small. The output is deterministic and
replaces schemas/ whole. Usage: python -m mlflow_gitops.schemas [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlflow_gitops.go_modules import generated_crds, module_dir
from mlflow_gitops.json_schema import Schema, convert_node, drop_descriptions, make_strict, walk
from mlflow_gitops.versions import KUBE_VERSION, PINS, ROOT

SCHEMAS = ROOT / "schemas"
SUBDIR = f"v{KUBE_VERSION}-standalone-strict"
SCHEMA_LOCATION = (
    "schemas/{{.NormalizedKubernetesVersion}}-standalone-strict/{{.ResourceKind}}{{.KindSuffix}}.json"
)

# (kind, apiVersion) of the core kinds to vendor from kubernetes-validate.
CORE_KINDS: tuple[tuple[str, str], ...] = (
    ("ConfigMap", "v1"),
    ("CronJob", "batch/v1"),
    ("Deployment", "apps/v1"),
    ("Job", "batch/v1"),
    ("Namespace", "v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
    ("PersistentVolumeClaim", "v1"),
    ("Pod", "v1"),
    ("PodDisruptionBudget", "policy/v1"),
    ("Role", "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("Secret", "v1"),
    ("Service", "v1"),
    ("ServiceAccount", "v1"),
)


@dataclass(frozen=True)
class Crd:
    pin_key: str  # key of tools/versions.env holding the module version
    module: str  # Go module that ships the CRD
    file: str  # path of the CRD YAML inside the module
    kinds: tuple[str, ...]  # kinds to take from that file
    versions: tuple[str, ...] = ()  # API versions to take; empty: every served version
    generated: bool = False  # the module has Go types only: `file` is what controller-gen writes


# One line per CRD file. Later Flux and Argo CD releases than the pins need Go >= 1.27.
# github.com/fluxcd/helm-controller (HelmRelease) is refused by the Go module proxy and its /api
# submodule ships no CRD YAML: that CRD is generated from the api module's Go types.
CRDS: tuple[Crd, ...] = (
    Crd("CNPG_VERSION", "github.com/cloudnative-pg/cloudnative-pg", "config/crd/bases/postgresql.cnpg.io_clusters.yaml", ("Cluster",)),
    Crd("CNPG_VERSION", "github.com/cloudnative-pg/cloudnative-pg", "config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml", ("ScheduledBackup",)),
    Crd("CNPG_VERSION", "github.com/cloudnative-pg/cloudnative-pg", "config/crd/bases/postgresql.cnpg.io_backups.yaml", ("Backup",)),
    Crd("EXTERNAL_SECRETS_VERSION", "github.com/external-secrets/external-secrets", "config/crds/bases/external-secrets.io_externalsecrets.yaml", ("ExternalSecret",), ("v1",)),
    Crd("GATEWAY_API_VERSION", "sigs.k8s.io/gateway-api", "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml", ("HTTPRoute",), ("v1",)),
    Crd("FLUX_SOURCE_CONTROLLER_VERSION", "github.com/fluxcd/source-controller", "config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml", ("GitRepository",), ("v1",)),
    Crd("FLUX_KUSTOMIZE_CONTROLLER_VERSION", "github.com/fluxcd/kustomize-controller", "config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml", ("Kustomization",), ("v1",)),
    Crd("FLUX_HELM_CONTROLLER_API_VERSION", "github.com/fluxcd/helm-controller/api", "helm.toolkit.fluxcd.io_helmreleases.yaml", ("HelmRelease",), ("v2",), generated=True),
    Crd("ARGOCD_VERSION", "github.com/argoproj/argo-cd/v3", "manifests/crds/application-crd.yaml", ("Application",), ("v1alpha1",)),
    Crd("PROMETHEUS_OPERATOR_VERSION", "github.com/prometheus-operator/prometheus-operator", "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml", ("ServiceMonitor",), ("v1",)),
    Crd("PROMETHEUS_OPERATOR_VERSION", "github.com/prometheus-operator/prometheus-operator", "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml", ("PodMonitor",), ("v1",)),
    Crd("PROMETHEUS_OPERATOR_VERSION", "github.com/prometheus-operator/prometheus-operator", "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml", ("PrometheusRule",), ("v1",)),
    Crd("ARGO_WORKFLOWS_VERSION", "github.com/argoproj/argo-workflows/v3", "manifests/base/crds/full/argoproj.io_workflowtemplates.yaml", ("WorkflowTemplate",), ("v1alpha1",)),
)  # fmt: skip

CORE_DRAFT = "https://json-schema.org/draft/2020-12/schema"  # kubernetes-validate's own draft
CRD_DRAFT = "http://json-schema.org/draft-04/schema#"  # OpenAPI v3.0 schemas are draft-4 style
DEFS_PREFIX = "#/$defs/"


def kind_suffix(api_version: str) -> str:
    """kubeconform's {{.KindSuffix}}: -<first label of the group>[-<version>] (pkg/registry)."""
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0]
    if len(parts) > 1:
        suffix += "-" + parts[1]
    return suffix.lower()


def file_name(kind: str, api_version: str) -> str:
    return f"{kind.lower()}{kind_suffix(api_version)}.json"


def dump(schema: Schema) -> bytes:
    return (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()


# --- core kinds ---------------------------------------------------------------------------------


def kubernetes_validate_dir() -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        raise SystemExit("kubernetes-validate is not installed; run from the repository's venv")
    directory = Path(spec.origin).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    if not directory.is_dir():
        raise SystemExit(f"{directory} is missing: does kubernetes-validate support {KUBE_VERSION}?")
    return directory


def local_ref(ref: str) -> str:
    """`/api/_definitions.json#/$defs/X` or `#/$defs/X` -> `#/$defs/X`."""
    _, sep, pointer = ref.partition("#")
    target = "#" + pointer
    if not sep or not target.startswith(DEFS_PREFIX) or "/" in target[len(DEFS_PREFIX) :]:
        raise SystemExit(f"unexpected $ref {ref!r}")
    return target


def core_schema(source: Path, definitions: dict[str, Schema], kind: str, api_version: str) -> Schema:
    schema: Schema = json.loads(source.read_text())
    group, _, version = api_version.rpartition("/")
    gvk = {"group": group, "kind": kind, "version": version}
    if gvk not in schema.get("x-kubernetes-group-version-kind", []):
        raise SystemExit(f"{source.name} is not the schema of {kind} {api_version}")
    schema.pop("$id", None)
    schema["$schema"] = CORE_DRAFT
    needed: dict[str, Schema] = {}
    pending = [schema]
    while pending:
        for node in walk(pending.pop()):
            if "$ref" not in node:
                continue
            node["$ref"] = local_ref(node["$ref"])
            name = node["$ref"][len(DEFS_PREFIX) :]
            if name not in needed:
                needed[name] = copy.deepcopy(definitions[name])
                pending.append(needed[name])
    schema["$defs"] = needed
    make_strict(schema)
    drop_descriptions(schema)
    return schema


def core_schemas() -> tuple[dict[str, bytes], str]:
    directory = kubernetes_validate_dir()
    definitions: dict[str, Schema] = json.loads((directory / "_definitions.json").read_text())["$defs"]
    files = {}
    for kind, api_version in CORE_KINDS:
        name = file_name(kind, api_version)
        files[name] = dump(core_schema(directory / name, definitions, kind, api_version))
    version = importlib.metadata.version("kubernetes-validate")
    return files, f"kubernetes-validate {version} (PyPI), its v{KUBE_VERSION}-local-strict schemas"


# --- custom resources ---------------------------------------------------------------------------


def crd_schema(crd: Schema, version: Schema) -> Schema:
    names = crd["spec"]["names"]
    schema: Schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    for node in list(walk(schema)):
        convert_node(node)
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties.setdefault("metadata", {"type": "object"})
    make_strict(schema)
    drop_descriptions(schema)
    schema["$schema"] = CRD_DRAFT
    schema["x-kubernetes-group-version-kind"] = [
        {"group": crd["spec"]["group"], "kind": names["kind"], "version": version["name"]}
    ]
    return schema


def crd_path(source: Crd) -> Path:
    """The CRD YAML of one CRDS entry, at its pin (also what tests/support/crds.py installs)."""
    if source.pin_key not in PINS:
        raise SystemExit(f"{source.pin_key} is not set in tools/versions.env")
    version = PINS[source.pin_key]
    directory = (
        generated_crds(source.module, version) if source.generated else module_dir(source.module, version)
    )
    return directory / source.file


def crd_schemas(source: Crd) -> tuple[dict[str, bytes], str]:
    version = PINS[source.pin_key]
    path = crd_path(source)
    files = {}
    for crd in yaml.safe_load_all(path.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        kind = crd["spec"]["names"]["kind"]
        if kind not in source.kinds:
            continue
        served = [v for v in crd["spec"]["versions"] if v.get("served")]
        for wanted in source.versions:
            if wanted not in {v["name"] for v in served}:
                raise SystemExit(f"{source.file}: {kind} {wanted} is not a served version")
        for api_version in served:
            if source.versions and api_version["name"] not in source.versions:
                continue
            name = file_name(kind, f"{crd['spec']['group']}/{api_version['name']}")
            files[name] = dump(crd_schema(crd, api_version))
    if not files:
        raise SystemExit(f"{source.module}@{version}/{source.file}: none of {source.kinds} found")
    if source.generated:
        generator = f"controller-gen {PINS['CONTROLLER_GEN_VERSION']}"
        return files, f"{source.module} {version} (Go module), {source.file} generated by {generator}"
    return files, f"{source.module} {version} (Go module), {source.file}"


# --- output -------------------------------------------------------------------------------------


def readme(sources: list[str]) -> bytes:
    lines = [
        "# schemas",
        "",
        "JSON schemas kubeconform validates the rendered manifests against, offline, with",
        f"`-schema-location '{SCHEMA_LOCATION}'`.",
        "Generated by `make schemas` (mlflow_gitops/schemas.py): do not edit by hand; change the pins in",
        "tools/versions.env or the lists in the script and regenerate. Sources:",
        "",
        *(f"- {source}" for source in sources),
    ]
    return ("\n".join(lines) + "\n").encode()


def generate(out: Path) -> dict[str, bytes]:
    """Write every schema and the README into the new directory `out`; return what was written."""
    files, source = core_schemas()
    sources = [source]
    for crd in CRDS:
        more, source = crd_schemas(crd)
        if clash := files.keys() & more.keys():
            raise SystemExit(f"two sources for {sorted(clash)}")
        files.update(more)
        sources.append(source)
    written = {f"{SUBDIR}/{name}": data for name, data in sorted(files.items())}
    written["README.md"] = readme(sources)
    for relative, data in written.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return written


def replace_dir(new: Path, old: Path) -> None:
    """Swap `new` in for `old` with two renames, so `old` is never half-written."""
    stale = old.with_name(f".{old.name}.old")
    shutil.rmtree(stale, ignore_errors=True)
    if old.exists():
        old.rename(stale)
    new.rename(old)
    shutil.rmtree(stale, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SCHEMAS, help="directory to (re)create")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    build.chmod(0o755)  # mkdtemp makes it private
    try:
        written = generate(build)
        replace_dir(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    for relative, data in written.items():
        print(f"{len(data):>9,}  {out.name}/{relative}")
    print(f"{sum(len(data) for data in written.values()):>9,}  total, {len(written)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

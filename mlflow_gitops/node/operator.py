"""The CloudNativePG operator on the node, from its Go module at CNPG_VERSION.

* Build: `cmd/manager` of the module github.com/cloudnative-pg/cloudnative-pg, compiled in the
  module's own directory (its go.mod and go.sum, CGO off) into bin/cnpg/manager. `go install
  MODULE/cmd/manager@VERSION` is refused here: it looks up the module's deprecation through its
  version list, which the Go module proxy answers with 403. Kept when `manager version` reports the
  pin.
* Install: the release manifest of that version (releases/cnpg-<version>.yaml in the module zip),
  server-side applied through the node's API in its own order, with two additions a registry-less
  node needs, both in `overrides()`:
  - the ConfigMap cnpg-controller-manager-config (the operator's documented configuration, read at
    start) naming the locally built PostgreSQL image as POSTGRES_IMAGE_NAME, so a Cluster without
    `imageName` (the chart's) gets it;
  - the Deployment's `imagePullPolicy: Always` becomes IfNotPresent: the image is imported into
    containerd, there is no registry to pull it from. With Always the kubelet asks containerd to
    pull anyway and the pod stays in ErrImagePull ("failed to resolve image: ... Head
    https://ghcr.io/v2/cloudnative-pg/cloudnative-pg/manifests/<version>: dial tcp: lookup ghcr.io
    ...: i/o timeout"); a registry inside the node's namespace would remove this change.
  Then it waits for the Deployment Available and for the admission webhook to answer (a dry-run
  create of a Cluster goes through it).
"""

from __future__ import annotations

import copy
import re
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient, ApiException, AppsV1Api, CustomObjectsApi

from mlflow_gitops import go_modules, install_postgres
from mlflow_gitops.node import api, cnpg_images
from mlflow_gitops.node.gobuild import BIN, run, timed
from mlflow_gitops.versions import PINS

MODULE = "github.com/cloudnative-pg/cloudnative-pg"
PIN = "CNPG_VERSION"
MANAGER = cnpg_images.MANAGER
NAMESPACE = "cnpg-system"
DEPLOYMENT = "cnpg-controller-manager"
CONFIG_MAP = "cnpg-controller-manager-config"  # the manifest's --config-map-name


def version() -> str:
    return PINS[PIN]


@cache
def module_dir() -> Path:
    """The module's directory in the module cache (`go mod download` fetches the zip once)."""
    return go_modules.module_dir(MODULE, version())


def built_version() -> str | None:
    """The operator version bin/cnpg/manager reports (`manager version`)."""
    if not MANAGER.exists():
        return None
    out = subprocess.run([str(MANAGER), "version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"Version:\s*\"?v?([0-9][^\s\",}]*)", out.stdout + out.stderr)
    return f"v{match.group(1)}" if match else None


def build() -> str:
    """bin/cnpg/manager, and the Debian packages of the operand image (install_postgres)."""
    if install_postgres.main(cnpg_images.OPERAND_PACKAGES) != 0:
        raise SystemExit(f"the operand image needs Debian's {', '.join(cnpg_images.OPERAND_PACKAGES)}")
    if built_version() == version():
        return f"cnpg manager {version()}: ./bin/cnpg (up to date)"
    MANAGER.parent.mkdir(parents=True, exist_ok=True)
    source = module_dir()
    cmd = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        "-s -w",
        "-o",
        str(MANAGER),
        "./cmd/manager",
    ]  # CGO off: run()
    message = timed(f"cnpg manager {version()}", lambda: run(cmd, cwd=source))
    if (found := built_version()) != version():
        raise SystemExit(f"cnpg manager: built {MANAGER.relative_to(BIN.parent)} but it reports {found}")
    return message


def missing() -> list[str]:
    return [] if built_version() == version() else [f"bin/cnpg/manager {version()}"]


# --- the release manifest ------------------------------------------------------------------------


@cache
def manifest() -> tuple[dict[str, Any], ...]:
    path = module_dir() / "releases" / f"cnpg-{version().removeprefix('v')}.yaml"
    if not path.exists():
        raise RuntimeError(f"{MODULE}@{version()} ships no {path.relative_to(module_dir())}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the manifest is 1.2 MB
    return tuple(doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc)


def deployment(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == DEPLOYMENT]
    if len(found) != 1:
        raise RuntimeError(f"the release manifest has {len(found)} Deployments named {DEPLOYMENT}")
    return found[0]


def operator_image() -> str:
    """The operator image the manifest runs (and OPERATOR_IMAGE_NAME, the instances' bootstrap)."""
    container = deployment(manifest())["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if env.get("OPERATOR_IMAGE_NAME", container["image"]) != container["image"]:
        raise RuntimeError(f"the manifest runs {container['image']} but names {env['OPERATOR_IMAGE_NAME']}")
    return container["image"]


def default_operand_repository() -> str:
    """The repository of the operator's default PostgreSQL image (pkg/versions in the module)."""
    source = (module_dir() / "pkg" / "versions" / "versions.go").read_text()
    if not (match := re.search(r'DefaultImageName\s*=\s*"([^":]+):', source)):
        raise RuntimeError("pkg/versions/versions.go: no DefaultImageName")
    return match.group(1)


def overrides(postgres_image: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifest as applied here, and the list of what differs from the release."""
    objects = [copy.deepcopy(o) for o in manifest()]
    container = deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    changes = [f"Deployment {DEPLOYMENT}: imagePullPolicy {container.get('imagePullPolicy')} -> IfNotPresent"]
    container["imagePullPolicy"] = "IfNotPresent"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE},
        "data": {"POSTGRES_IMAGE_NAME": postgres_image},
    }
    changes.append(f"ConfigMap {CONFIG_MAP} added: POSTGRES_IMAGE_NAME={postgres_image}")
    first = [o for o in objects if o["kind"] == "Namespace"]
    return [*first, config, *(o for o in objects if o["kind"] != "Namespace")], changes


# --- on the node ---------------------------------------------------------------------------------


def import_images(socket: Path) -> dict[str, str]:
    """Build (or take from the cache) and import both images; returns reference -> size."""
    cnpg_images.check_umoci()
    packages = cnpg_images.operand_packages()
    operand = cnpg_images.operand_image(default_operand_repository(), packages)
    out = {}
    for reference, tar in (
        (operator_image(), cnpg_images.operator_tar(operator_image())),
        (operand, cnpg_images.operand_tar(operand, packages)),
    ):
        cnpg_images.import_image(reference, tar, socket)
        out[reference] = cnpg_images.size(tar)
    return out


def postgres_image() -> str:
    return cnpg_images.operand_image(default_operand_repository(), cnpg_images.operand_packages())


def deployment_available(client: ApiClient) -> tuple[bool, str]:
    status = AppsV1Api(client).read_namespaced_deployment_status(DEPLOYMENT, NAMESPACE).status
    available = next((c for c in status.conditions or [] if c.type == "Available"), None)
    if available is None:
        return False, "no Available condition yet"
    return available.status == "True", f"Available={available.status} {available.message or ''}"


def probe_cluster(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "webhook-probe", "namespace": namespace},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}},
    }


def webhook_serving(client: ApiClient, namespace: str = "default") -> tuple[bool, str]:
    """A dry-run create of a valid Cluster: admitted only once the operator's webhooks answer."""
    try:
        CustomObjectsApi(client).create_namespaced_custom_object(
            "postgresql.cnpg.io", "v1", namespace, "clusters", probe_cluster(namespace), dry_run="All"
        )
    except ApiException as error:
        return False, f"dry-run create {api.message(error)[:300]}"
    return True, "dry-run create admitted"


def install(client: api.NodeClient, postgres_image: str, timeout: float = 600) -> dict[str, float]:
    """Apply the manifest, wait for the Deployment Available and the webhook; returns the durations."""
    timings, started = {}, time.monotonic()
    objects, _ = overrides(postgres_image)
    for obj in objects:
        api.apply(client, obj)
        if obj["kind"] == "CustomResourceDefinition":
            api.wait_established(client, obj["metadata"]["name"])
    timings["operator manifest applied"] = time.monotonic() - started
    timings["operator Deployment Available"] = api.wait_for(
        f"Deployment {NAMESPACE}/{DEPLOYMENT} Available", lambda: deployment_available(client), timeout, 2
    )
    timings["operator webhook serving"] = api.wait_for(
        "the CloudNativePG webhook admits a dry-run Cluster", lambda: webhook_serving(client), timeout, 2
    )
    return timings

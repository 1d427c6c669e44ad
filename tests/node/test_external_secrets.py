"""External Secrets on the node writes the Secrets the chart's own ExternalSecrets ask for: its
controller (./bin, from its Go module at EXTERNAL_SECRETS_VERSION; mlflow_gitops.node.external_secrets)
reconciles them against a store of the homelab's name and kind (the Vault store) whose provider is
External Secrets' built-in `fake`, holding random values at the keys and properties they read.

The chart is installed with values/homelab.yaml and tests/node/lab-overrides.yaml without that
file's two External Secrets overrides (databaseCredentials, flaskSecretKey): the ExternalSecrets are
the chart's, only Vault is stood in for. CloudNativePG bootstraps the database owner from the
written Secret and MLflow starts with both. The rest of the cluster (CloudNativePG, storage classes)
is prepared as tests/node/test_helm_install.py does it.

Run by `make node-test` (marked `node` and `upstream`); the controller is built apart
(`make node-external-secrets`).
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import AppsV1Api, CoreV1Api

from mlflow_gitops import chart
from mlflow_gitops.node import api, external_secrets, gobuild, homelab, operator
from mlflow_gitops.node.node import Node
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render
from tests.node import kube, release
from tests.node.conftest import SUMMARY
from tests.support.ci import unavailable

pytestmark = [pytest.mark.node, pytest.mark.upstream]

# The overrides of lab-overrides.yaml this test leaves out: the chart's ExternalSecrets stay on.
EXTERNAL_SECRETS_OVERRIDES = ("databaseCredentials", "flaskSecretKey")
TEMPLATE_REFERENCE = re.compile(r"\{\{\s*\.([A-Za-z0-9_-]+)\s*\}\}")


@dataclass
class Synced:
    node: Node
    controller: external_secrets.Controller
    render: Render
    store: dict[str, Any]
    held: dict[str, dict[str, str]]  # what the fake store holds: key -> property -> value

    def wait(self, what: str, probe, timeout: float) -> None:
        try:
            timed(what, lambda: api.wait_for(what, probe, timeout, 2))
        except TimeoutError as error:
            state = "running" if self.controller.alive() else "exited"
            raise AssertionError(
                f"{error}\ncontroller {state}:\n{self.controller.tail(20)}\n{release.details(self.node.client)}"
            ) from error


def timed(step: str, action) -> Any:
    started = time.monotonic()
    result = action()
    SUMMARY.append(f"external-secrets: {step}: {time.monotonic() - started:.1f} s")
    return result


def lab_values(run_dir: Path) -> Path:
    """lab-overrides.yaml without its External Secrets overrides, as a values file in the run dir."""
    overrides = yaml.safe_load(release.OVERRIDES.read_text())
    missing = [key for key in EXTERNAL_SECRETS_OVERRIDES if key not in overrides]
    assert not missing, f"{release.OVERRIDES.name} no longer overrides {missing}: update this test"
    kept = {key: value for key, value in overrides.items() if key not in EXTERNAL_SECRETS_OVERRIDES}
    path = run_dir / "lab-overrides-with-external-secrets.yaml"
    path.write_text(yaml.safe_dump(kept))
    return path


def free_volumes(node: Node) -> None:
    """Delete the volumes the release's claims left Released (with their data) and make them again,
    empty, so a later install on the same node starts from empty volumes."""
    core = CoreV1Api(node.client)
    for pv in core.list_persistent_volume().items:
        if pv.spec.claim_ref and pv.spec.claim_ref.namespace == NAMESPACE:
            kube.absent(lambda pv=pv: core.delete_persistent_volume(pv.metadata.name))
            source = pv.spec.local or pv.spec.host_path
            if source and source.path:
                shutil.rmtree(source.path, ignore_errors=True)
    homelab.create_storage(node.client, node.run_dir)


def expected_secret(es: dict[str, Any], held: dict[str, dict[str, str]]) -> dict[str, str]:
    """What an ExternalSecret of the render writes from the store: its data's values, through its
    template's data when it has one (literals kept, `{{ .name }}` replaced)."""
    fetched = {item["secretKey"]: held[item["remoteRef"]["key"]][item["remoteRef"]["property"]] for item in es["spec"]["data"]}  # fmt: skip
    template = es["spec"].get("target", {}).get("template", {}).get("data")
    if not template:
        return fetched
    return {key: TEMPLATE_REFERENCE.sub(lambda m: fetched[m.group(1)], str(value)) for key, value in template.items()}  # fmt: skip


@pytest.fixture(scope="module")
def synced(node: Node) -> Iterator[Synced]:
    tool = external_secrets.TOOL
    if gobuild.module_version(tool.path, tool.module) != tool.version:
        unavailable(f"needs bin/{tool.name} {tool.version}: run `make node-external-secrets`")
    client, render = node.client, homelab.render()
    held = external_secrets.remote_values(render)
    store = external_secrets.fake_store(render, held)
    images = timed("operator images", lambda: operator.import_images(node.layout.containerd_socket))
    SUMMARY.extend(f"external-secrets: image {ref}: {size}" for ref, size in images.items())
    for step, seconds in operator.install(client, operator.postgres_image()).items():
        SUMMARY.append(f"external-secrets: {step}: {seconds:.1f} s")
    homelab.create_storage(client, node.run_dir)
    names = timed("CRDs Established", lambda: external_secrets.install_crds(client))
    SUMMARY.append(f"external-secrets: {len(names)} CRDs of {tool.module}@{tool.version}")
    controller = external_secrets.Controller(node)
    synced = Synced(node, controller, render, store, held)
    try:
        timed("controller ready", controller.start)
        external_secrets.apply_store(client, store)
        key = external_secrets.store_key(store)
        synced.wait(f"{key[0]} {key[1]} Ready", lambda: external_secrets.ready(client, *key), 300)
        for key, props in sorted(held.items()):
            line = f"{store['kind']} {store['metadata']['name']} (provider fake, standing in for Vault): {key}: {sorted(props)}, random values"  # fmt: skip
            print(line)
            SUMMARY.append(f"external-secrets: {line}")
        api.create_or_keep(lambda: CoreV1Api(client).create_namespace({"metadata": {"name": NAMESPACE}}))
        values = [f"--values={chart.VALUES / 'homelab.yaml'}", f"--values={lab_values(node.run_dir)}"]
        SUMMARY.append(f"external-secrets: overrides left out: {list(EXTERNAL_SECRETS_OVERRIDES)}")
        done = timed("helm install", lambda: release.helm(node, "install", release.RELEASE, str(chart.CHART), f"--namespace={NAMESPACE}", *values))  # fmt: skip
        assert done.returncode == 0, f"helm install exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        yield synced
    finally:
        try:
            release.remove(node)
            kube.absent(lambda: external_secrets.delete(client, *external_secrets.store_key(store)))
            free_volumes(node)
        finally:
            controller.stop()


def test_external_secrets_controller_from_its_go_module_serves_the_homelab_store_with_the_fake_provider(
    synced: Synced,
) -> None:
    tool = external_secrets.TOOL
    assert gobuild.module_version(tool.path, tool.module) == tool.version
    assert synced.controller.alive(), synced.controller.tail()
    kind, name = external_secrets.store_ref(synced.render)
    found = external_secrets.read(synced.node.client, *external_secrets.store_key(synced.store))
    assert (found["kind"], found["metadata"]["name"]) == (kind, name)
    assert list(found["spec"]["provider"]) == ["fake"], found["spec"]
    assert external_secrets.conditions(found)["Ready"].startswith("True"), found.get("status")
    SUMMARY.append(f"external-secrets: controller {tool.version}; {kind} {name} Ready")


def test_the_charts_external_secrets_are_ready_and_write_their_secrets_from_the_store(synced: Synced) -> None:
    client = synced.node.client
    for es in synced.render.find("ExternalSecret"):
        name = es["metadata"]["name"]
        synced.wait(
            f"ExternalSecret {name} Ready",
            lambda name=name: external_secrets.ready(client, "ExternalSecret", name, NAMESPACE),
            300,
        )
        target = es["spec"]["target"]["name"]
        secret = CoreV1Api(client).read_namespaced_secret(target, NAMESPACE)
        wanted_type = es["spec"]["target"].get("template", {}).get("type", "Opaque")
        assert secret.type == wanted_type, (target, secret.type)
        written = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
        assert written == expected_secret(es, synced.held), f"Secret {target}: keys {sorted(written)}"
        owners = [(o.kind, o.name) for o in secret.metadata.owner_references or []]
        assert owners == [("ExternalSecret", name)], owners
        line = f"Secret {NAMESPACE}/{target} ({secret.type}; {', '.join(sorted(written))}): written by ExternalSecret {name} from the fake store"  # fmt: skip
        print(line)
        SUMMARY.append(f"external-secrets: {line}")


def test_cloudnativepg_and_mlflow_start_from_the_secrets_external_secrets_wrote(synced: Synced) -> None:
    client = synced.node.client
    cluster = release.cluster_name()
    bootstrap = release.cluster(client, cluster)["spec"]["bootstrap"]["initdb"]["secret"]["name"]
    targets = [es["spec"]["target"]["name"] for es in synced.render.find("ExternalSecret")]
    assert bootstrap in targets, (bootstrap, targets)
    synced.wait(f"Cluster {cluster} Ready", lambda: release.cluster_ready(client, cluster), 900)
    synced.wait("MLflow Deployment ready", lambda: release.deployment_ready(client, release.RELEASE), 600)
    pod_spec = AppsV1Api(client).read_namespaced_deployment(release.RELEASE, NAMESPACE).spec.template.spec
    env_from = {
        ref.secret_ref.name for c in pod_spec.containers for ref in c.env_from or [] if ref.secret_ref
    }
    assert set(targets) - {bootstrap} <= env_from, (targets, env_from)

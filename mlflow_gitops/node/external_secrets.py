"""External Secrets on the node: its controller as a process in the node's network namespace (as the
node's admin, like Flux's controllers), its CRDs from the same Go module, and a store of the name
and kind the chart's ExternalSecrets ask for (the homelab's Vault store) whose provider is External
Secrets' built-in `fake`: it holds a random value at every key and property they read.

* The controller is ./bin/external-secrets, built from tools/node/external-secrets (one `tool`
  line and the release's replace: `go install` refuses a module with replace directives) at
  EXTERNAL_SECRETS_VERSION, apart from `make node-build`: `make node-external-secrets`.
  It runs with leader election off, watching all namespaces, its metrics on METRICS_PORT of the
  node's address (the root command has no health endpoint: /metrics answering is its readiness).
* The CRDs are every CustomResourceDefinition of `config/crds/bases` of the module at the pin.

    install_crds(client)
    with Controller(node):
        apply_store(client, fake_store(render, values))
        ...  # the chart's ExternalSecrets write their Secrets
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client import ApiClient, CustomObjectsApi

from mlflow_gitops import go_modules
from mlflow_gitops.node import addons, api, host, processes
from mlflow_gitops.podrunner.base import NAMESPACE
from mlflow_gitops.podrunner.render import Render

if TYPE_CHECKING:
    from mlflow_gitops.node.node import Node

TOOL = addons.by_name("external-secrets")
METRICS_PORT = 18090  # a port of its own, apart from Flux's controllers' (mlflow_gitops.node.flux)
GROUP = "external-secrets.io/v1"
PLURALS = {"ClusterSecretStore": "clustersecretstores", "SecretStore": "secretstores", "ExternalSecret": "externalsecrets"}  # fmt: skip


def crd_files() -> list[Path]:
    """The CRD files of the module at the version ./bin's binary is built from."""
    bases = go_modules.module_dir(TOOL.module, TOOL.version) / "config" / "crds" / "bases"
    found = sorted(p for p in bases.glob("*.yaml") if p.name != "kustomization.yaml")
    if not found:
        raise RuntimeError(f"{TOOL.module}@{TOOL.version}: no CRD in config/crds/bases")
    return found


def install_crds(client: api.NodeClient) -> list[str]:
    """Apply every External Secrets CRD (server-side) and wait until each is Established; returns their names."""
    return api.install_crds(client, crd_files())


def store_ref(render: Render) -> tuple[str, str]:
    """The (kind, name) of the one store every ExternalSecret of the render reads from."""
    refs = {(es["spec"]["secretStoreRef"]["kind"], es["spec"]["secretStoreRef"]["name"]) for es in render.find("ExternalSecret")}  # fmt: skip
    if len(refs) != 1:
        raise ValueError(
            f"{render.path.name}: the ExternalSecrets read from {sorted(refs)}: expected one store"
        )
    return refs.pop()


def remote_values(render: Render) -> dict[str, dict[str, str]]:
    """A random value for every key and property the render's ExternalSecrets read: key -> property -> value."""
    values: dict[str, dict[str, str]] = {}
    for es in render.find("ExternalSecret"):
        for item in es["spec"].get("data", []):
            ref = item["remoteRef"]
            if not ref.get("property"):
                raise ValueError(
                    f"ExternalSecret {es['metadata']['name']}: key {ref['key']} without a property"
                )
            values.setdefault(ref["key"], {})[ref["property"]] = secrets.token_urlsafe(32)
    return values


def fake_store(render: Render, values: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The render's store, of its kind and name, with the `fake` provider holding `values` (each key
    a JSON object, so a remoteRef's property selects one value, as a Vault KV key's does)."""
    kind, name = store_ref(render)
    if kind not in ("ClusterSecretStore", "SecretStore"):
        raise ValueError(f"secretStoreRef kind {kind!r}: allowed ClusterSecretStore, SecretStore")
    metadata = {"name": name} | ({"namespace": NAMESPACE} if kind == "SecretStore" else {})
    data = [{"key": key, "value": json.dumps(props, sort_keys=True)} for key, props in sorted(values.items())]
    return {"apiVersion": GROUP, "kind": kind, "metadata": metadata, "spec": {"provider": {"fake": {"data": data}}}}  # fmt: skip


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')[:300]}" for c in obj.get("status", {}).get("conditions", [])}  # fmt: skip


def custom_ref(kind: str, namespace: str | None = None) -> tuple[str, ...]:
    """CustomObjectsApi's leading arguments for a kind of the group: (group, version, [namespace,]
    plural), the namespace for the namespaced calls only."""
    if kind not in PLURALS:
        raise ValueError(f"kind {kind!r}: allowed {', '.join(PLURALS)}")
    group, version = GROUP.split("/")
    return (group, version, *([namespace] if namespace else []), PLURALS[kind])


def read(client: ApiClient, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    """An object of the group as stored (a dict); cluster-scoped when `namespace` is None."""
    custom = CustomObjectsApi(client)
    if namespace:
        return custom.get_namespaced_custom_object(*custom_ref(kind, namespace), name)
    return custom.get_cluster_custom_object(*custom_ref(kind), name)


def delete(client: ApiClient, kind: str, name: str, namespace: str | None = None) -> None:
    custom = CustomObjectsApi(client)
    if namespace:
        custom.delete_namespaced_custom_object(*custom_ref(kind, namespace), name)
    else:
        custom.delete_cluster_custom_object(*custom_ref(kind), name)


def store_key(store: dict[str, Any]) -> tuple[str, str, str | None]:
    """(kind, name, namespace or None) of a store as fake_store() makes it."""
    return store["kind"], store["metadata"]["name"], store["metadata"].get("namespace")


def apply_store(client: ApiClient, store: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of a store (created, or updated to hold these values); returns it as stored."""
    kind, name, namespace = store_key(store)
    custom = CustomObjectsApi(client)
    options = {"field_manager": api.FIELD_MANAGER, "force": True, "_content_type": api.APPLY_PATCH}
    if namespace:
        return custom.patch_namespaced_custom_object(*custom_ref(kind, namespace), name, store, **options)
    return custom.patch_cluster_custom_object(*custom_ref(kind), name, store, **options)


def ready(client: ApiClient, kind: str, name: str, namespace: str | None = None) -> tuple[bool, str]:
    """Whether the object's Ready condition is True; its conditions as the state."""
    found = conditions(read(client, kind, name, namespace))
    return found.get("Ready", "").startswith("True"), f"{kind} {name}: conditions {found}"


class Controller(processes.Started):
    """The External Secrets controller, a process in the node's namespace; stop() ends it."""

    def __init__(self, node: Node, timeout: float = 300) -> None:
        self.node, self.timeout = node, timeout
        self.log = node.layout.log(TOOL.name)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            str(TOOL.path), f"--metrics-addr={host.NODE_IP}:{METRICS_PORT}", "--enable-leader-election=false",
            "--loglevel=info", "--zap-time-encoding=iso8601",
        ]  # fmt: skip

    def start(self) -> None:
        home = self.node.run_dir / TOOL.name
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "KUBECONFIG": str(self.node.layout.kubeconfig("admin"))}  # fmt: skip
        self.process = processes.spawn(self.node.netns.enter(), self.command(), self.log, env)
        api.wait_for(f"{TOOL.name} /metrics", self._ready, self.timeout)

    def _ready(self) -> tuple[bool, str]:
        if self.process is None or self.process.poll() is not None:
            code = self.process.returncode if self.process else None
            raise RuntimeError(f"{TOOL.name} exited {code}:\n{self.tail()}")
        return processes.healthy(self.node.netns.path, METRICS_PORT, "/metrics")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 25) -> str:
        return processes.tail(self.log, lines)

    def stop(self) -> None:
        processes.terminate(self.process, grace=30)
        self.process = None

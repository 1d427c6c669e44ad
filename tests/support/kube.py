"""What the tests in tests/api do with the `kubernetes` client beyond its typed calls: server-side
apply of any kind (the dynamic client, as `kubectl apply --server-side [--dry-run=server]`) with the
warnings the server sent, the message of a refusal, namespaces as the (absent) controllers would
complete them, and the project's CRDs installed until Established and served.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient, ApiException
from kubernetes.dynamic import DynamicClient

from tests.support.crds import crds_of_schemas

Obj = dict[str, Any]

FIELD_MANAGER = "mlflow-gitops-tests"
APPLY_PATCH = "application/apply-patch+yaml"


def message(error: ApiException) -> str:
    """The message of the Status the API server answered a refusal with (else its whole body)."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{error.status} {error.reason}: {error.body}"


def apply(
    dynamic: DynamicClient, obj: Obj, namespace: str | None = None, *, dry_run: bool = True
) -> tuple[Obj, list[str]]:
    """Server-side apply with conflicts forced; returns the object as the server answered and the
    Warning headers it sent (Pod Security's, deprecations). A refusal raises ApiException."""
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = (obj["metadata"].get("namespace") or namespace) if resource.namespaced else None
    response = dynamic.server_side_apply(
        resource,
        body=obj,
        namespace=ns,
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        dry_run="All" if dry_run else None,
        serialize=False,
    )
    return json.loads(response.data), response.headers.getlist("Warning")


def stored(dynamic: DynamicClient, obj: Obj, namespace: str | None = None) -> Obj | None:
    """The object as the API server stores it, None when it has none."""
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = (obj["metadata"].get("namespace") or namespace) if resource.namespaced else None
    try:
        return resource.get(name=obj["metadata"]["name"], namespace=ns).to_dict()
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def namespace(api: ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    """A namespace with its `default` ServiceAccount, as the (absent) controllers would make it."""
    core = client.CoreV1Api(api)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    core.patch_namespace(name, body, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": name},
    }
    core.patch_namespaced_service_account(
        "default", name, account, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH
    )


def install_crds(api: ApiClient, timeout: float = 120) -> list[Obj]:
    """Install the CRDs of mlflow_gitops/schemas.py and wait until each is Established and every
    served version lists its kind; returns them as stored."""
    extensions = client.ApiextensionsV1Api(api)
    crds = list(crds_of_schemas())
    for crd in crds:
        extensions.create_custom_resource_definition(crd)
    deadline = time.monotonic() + timeout
    installed = []
    for crd in crds:
        name = crd["metadata"]["name"]
        while True:
            found = extensions.read_custom_resource_definition(name)
            # A CRD just created may have no conditions yet.
            conditions = {c.type: c.status for c in (found.status and found.status.conditions) or []}
            if conditions.get("Established") == "True" and serves(api, crd):
                installed.append(api.sanitize_for_serialization(found))
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not Established and served: {conditions}")
            time.sleep(0.2)
    return installed


def serves(api: ApiClient, crd: Obj) -> bool:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    custom = client.CustomObjectsApi(api)
    for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served")):
        try:
            listed = custom.get_api_resources(group, version)
        except ApiException:
            return False
        if kind not in {r.kind for r in listed.resources}:
            return False
    return True

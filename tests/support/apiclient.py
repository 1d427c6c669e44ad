"""Requests to a Kubernetes API server as a client sends them: plain HTTPS with a bearer token
(`request`), discovery of the kinds served, server-side apply (`apply`) and dry runs, namespaces as
the (absent) controllers would complete them, and the project's CRDs installed until served.

`ApiClient` is mixed into ApiServer (tests/support/apiserver.py), which provides the address, the
token, the CA file and the discovery cache.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.crds import crds_of_schemas

Obj = dict[str, Any]

FIELD_MANAGER = "mlflow-gitops-tests"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass
class Response:
    status: int
    body: Any
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message", self.body))
        return str(self.body)


@dataclass(frozen=True)
class Resource:
    path: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool

    def url(self, namespace: str | None, name: str | None = None) -> str:
        parts = [self.path]
        if self.namespaced:
            parts += ["namespaces", namespace or "default"]
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


class ApiClient:
    """Requests, discovery and objects; the class it is mixed into provides what is declared here."""

    token: str
    crds: list[Obj]  # as installed and Established (install_crds)
    _resources: dict[str, dict[str, Resource]]

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def ca_file(self) -> Path:
        raise NotImplementedError

    # --- HTTP -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:
                status, raw, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as error:
            status, raw, headers = error.code, error.read(), error.headers
        try:
            parsed: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            parsed = raw.decode(errors="replace")
        return Response(status, parsed, headers.get_all("Warning") or [])

    # --- discovery and objects ------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """The REST path of a kind, from the server's discovery (cached per group version)."""
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if kind not in self._resources.get(api_version, {}):
            response = self.request("GET", path)
            if not response.ok:
                raise LookupError(f"{api_version} is not served: {response.message}")
            self._resources[api_version] = {
                r["kind"]: Resource(path, r["name"], r["namespaced"])
                for r in response.body["resources"]
                if "/" not in r["name"]
            }
        try:
            return self._resources[api_version][kind]
        except KeyError:
            raise LookupError(f"{kind} is not served in {api_version}") from None

    def object_url(self, obj: Obj, namespace: str | None = None) -> str:
        resource = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") or namespace
        return resource.url(ns if resource.namespaced else None, obj["metadata"]["name"])

    def apply(
        self, obj: Obj, namespace: str | None = None, *, dry_run: bool = True, force: bool = True
    ) -> Response:
        """Server-side apply (`kubectl apply --server-side [--dry-run=server]`)."""
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        body = yaml.safe_dump(obj).encode()
        return self.request(
            "PATCH", self.object_url(obj, namespace), body, content_type=APPLY_PATCH, query=query
        )

    def create(self, obj: Obj, namespace: str | None = None, *, dry_run: bool = True) -> Response:
        """POST, as a controller creates an object (e.g. the ReplicaSet controller a Pod)."""
        resource = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace") or namespace
        query = {"dryRun": "All"} if dry_run else None
        return self.request("POST", resource.url(ns if resource.namespaced else None), obj, query=query)

    def get(self, obj: Obj, namespace: str | None = None) -> Response:
        return self.request("GET", self.object_url(obj, namespace))

    def delete(self, obj: Obj, namespace: str | None = None) -> Response:
        return self.request("DELETE", self.object_url(obj, namespace))

    def ensure(self, obj: Obj) -> Obj:
        """Apply an object for real and return it as stored."""
        response = self.apply(obj, dry_run=False)
        if not response.ok:
            raise RuntimeError(
                f"apply {obj['kind']}/{obj['metadata']['name']}: {response.status} {response.message}"
            )
        return response.body

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        """A namespace with its `default` ServiceAccount, as the (absent) controllers would make it."""
        ns = self.ensure(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        )
        self.ensure(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}
        )
        return ns

    # --- CRDs -----------------------------------------------------------------------------------

    def install_crds(self, timeout: float = 120) -> list[Obj]:
        """Install the CRDs of mlflow_gitops/schemas.py and wait until each is Established and served."""
        crds = list(crds_of_schemas())
        for crd in crds:
            self.ensure(crd)
        deadline = time.monotonic() + timeout
        installed = []
        for crd in crds:
            name = crd["metadata"]["name"]
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            while True:
                stored = self.request("GET", path).body
                # A CRD just created may have no conditions yet (`null`, e.g. Argo Workflows' own YAML).
                found = (stored.get("status") or {}).get("conditions") or []
                conditions = {c["type"]: c["status"] for c in found}
                if conditions.get("Established") == "True" and self._serves(stored):
                    installed.append(stored)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established: {stored.get('status')}")
                time.sleep(0.2)
        self.crds = installed
        return installed

    def _serves(self, crd: Obj) -> bool:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in (v["name"] for v in crd["spec"]["versions"] if v.get("served")):
            self._resources.pop(f"{group}/{version}", None)
            try:
                self.resource(f"{group}/{version}", kind)
            except LookupError:
                return False
        return True

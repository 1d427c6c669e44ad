"""The render: the objects of a rendered/<env>.yaml, and lookups over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from mlflow_gitops.podrunner.base import CLUSTER_DOMAIN, DEFAULT_RENDER, NAMESPACE, Obj, PodRunnerError


@dataclass(frozen=True)
class Render:
    path: Path
    objects: list[Obj]
    namespace: str = NAMESPACE

    @classmethod
    def load(cls, path: Path = DEFAULT_RENDER, namespace: str = NAMESPACE) -> Render:
        if not path.exists():
            raise PodRunnerError(f"{path}: no such render (run `make render`)")
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        return cls(path=path, objects=docs, namespace=namespace)

    def find(self, kind: str, name: str | None = None) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
        ]

    def get(self, kind: str, name: str) -> Obj | None:
        found = self.find(kind, name)
        return found[0] if found else None

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = self.find(kind, name)
        if len(found) != 1:
            raise PodRunnerError(f"{self.path}: expected one {kind} {name or ''}, found {len(found)}")
        return found[0]

    def route_hostnames(self) -> list[str]:
        return [h for r in self.find("HTTPRoute") for h in r["spec"].get("hostnames", [])]

    def service_for(self, deployment: Obj) -> Obj:
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        for svc in self.find("Service"):
            selector = svc["spec"].get("selector") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                return svc
        raise PodRunnerError(f"no Service in {self.path} selects Deployment {deployment['metadata']['name']}")

    def service_host(self, deployment: Obj) -> str:
        """The in-cluster Host header of the pod's Service: `name.ns.svc.cluster.local:port`."""
        svc = self.service_for(deployment)
        port = svc["spec"]["ports"][0]["port"]
        return f"{svc['metadata']['name']}.{self.namespace}.svc.{CLUSTER_DOMAIN}:{port}"

"""ConfigMaps and Secrets: rendered ones as rendered, ExternalSecret targets from a test secret."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow_gitops.podrunner.base import PodRunnerError
from mlflow_gitops.podrunner.render import Render


def external_secret_targets(render: Render) -> dict[str, dict[str, str | None]]:
    """Secret name -> key -> literal value from the template (None when Vault provides it)."""
    targets: dict[str, dict[str, str | None]] = {}
    for es in render.find("ExternalSecret"):
        spec = es["spec"]
        name = spec.get("target", {}).get("name") or es["metadata"]["name"]
        template_data = spec.get("target", {}).get("template", {}).get("data")
        keys: dict[str, str | None] = {}
        if template_data:
            for key, value in template_data.items():
                text = str(value)
                keys[key] = None if "{{" in text else text
        else:
            for item in spec.get("data", []):
                keys[item["secretKey"]] = None
        if not keys:
            raise PodRunnerError(
                f"ExternalSecret {es['metadata']['name']}: no keys in spec.data or target.template.data"
            )
        targets[name] = keys
    return targets


def generate_test_secrets(render: Render) -> dict[str, dict[str, str]]:
    """Random values for every Secret an ExternalSecret would write (kept literals stay)."""
    return {
        name: {k: v if v is not None else secrets.token_urlsafe(32) for k, v in keys.items()}
        for name, keys in external_secret_targets(render).items()
    }


@dataclass(frozen=True)
class Store:
    """What the API server would hold for the pod's namespace."""

    configmaps: dict[str, dict[str, bytes]]
    secrets: dict[str, dict[str, bytes]]

    @classmethod
    def build(cls, render: Render, test_secrets: Mapping[str, Mapping[str, str]]) -> Store:
        cms: dict[str, dict[str, bytes]] = {}
        for cm in render.find("ConfigMap"):
            data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
            data |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
            cms[cm["metadata"]["name"]] = data
        sec: dict[str, dict[str, bytes]] = {}
        for s in render.find("Secret"):
            name = s["metadata"]["name"]
            if name in test_secrets:
                raise PodRunnerError(f"Secret {name} is both rendered and the target of an ExternalSecret")
            data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
            data |= {k: str(v).encode() for k, v in (s.get("stringData") or {}).items()}
            sec[name] = data
        for name, values in test_secrets.items():
            sec[name] = {k: v.encode() for k, v in values.items()}
        return cls(configmaps=cms, secrets=sec)

    def source(self, kind: str, name: str, optional: bool, where: str) -> dict[str, bytes] | None:
        table = self.configmaps if kind == "ConfigMap" else self.secrets
        if name in table:
            return table[name]
        if optional:
            return None
        raise PodRunnerError(
            f"{where}: {kind} {name!r} is neither in the render nor written by an ExternalSecret"
        )

"""kubeconform against the vendored schemas, offline, at the pinned Kubernetes version."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlflow_gitops import tools
from mlflow_gitops.versions import KUBE_VERSION, ROOT

SCHEMAS = ROOT / "schemas"
SCHEMA_LOCATION = (
    str(SCHEMAS) + "/{{.NormalizedKubernetesVersion}}-standalone-strict/{{.ResourceKind}}{{.KindSuffix}}.json"
)


def kubeconform_binary() -> str:
    return tools.binary("kubeconform")


def kubeconform(paths: list[Path]) -> str:
    """Validate manifests strictly; return kubeconform's complaints, or "" when all are valid.

    Only the vendored schemas are consulted (no default location), so nothing is fetched and a
    kind without a schema is an error rather than a silent skip.
    """
    cmd = [
        kubeconform_binary(),
        "-strict",
        "-summary",
        "-output",
        "text",
        "-kubernetes-version",
        KUBE_VERSION,
        "-schema-location",
        SCHEMA_LOCATION,
        *[str(p) for p in paths],
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return (out.stdout + out.stderr).strip()
    return ""

"""The project's CRDs as a client installs them: the CRD objects mlflow_gitops/schemas.py generates
the kubeconform schemas from (its CRDS table, same files, same pins), and the CEL rules in them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from mlflow_gitops import schemas  # the CRD table
from mlflow_gitops.json_schema import walk

Obj = dict[str, Any]


def crds_of_schemas() -> Iterator[Obj]:
    """The CRD objects mlflow_gitops/schemas.py reads (every version of each, as the project ships it)."""
    seen = set()
    for source in schemas.CRDS:
        try:
            path = schemas.crd_path(source)  # go mod download (module cache or proxy), controller-gen
        except SystemExit as error:  # the script's way to fail; here it must not end the session
            raise RuntimeError(f"CRD of {source.kinds} unavailable: {error}") from None
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            if crd["spec"]["names"]["kind"] in source.kinds and crd["metadata"]["name"] not in seen:
                seen.add(crd["metadata"]["name"])
                yield crd


def cel_rules(crd: Obj) -> list[Obj]:
    """Every `x-kubernetes-validations` rule in a CRD's schemas ({rule, message, ...}), all versions."""
    found = []
    for version in crd["spec"]["versions"]:
        schema = version.get("schema", {}).get("openAPIV3Schema", {})
        for node in walk(schema):
            found += node.get("x-kubernetes-validations", [])
    return found

"""Small lookups over rendered Kubernetes objects, shared by the tests."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: Obj, name: str, *, init: bool = False) -> Obj:
    spec = deployment["spec"]["template"]["spec"]
    for c in spec.get("initContainers" if init else "containers", []):
        if c["name"] == name:
            return c
    raise AssertionError(f"no {'init ' if init else ''}container {name} in {deployment['metadata']['name']}")


def args_map(args: list[str]) -> dict[str, str]:
    """`--key=value` arguments as a mapping (flags without a value map to "")."""
    pairs = (a.removeprefix("--").partition("=") for a in args if a.startswith("--"))
    return {key: value for key, _, value in pairs}


def env_value(container_spec: Obj, name: str) -> Obj:
    for item in container_spec.get("env", []):
        if item["name"] == name:
            return item
    raise AssertionError(f"no env {name} in container {container_spec['name']}")


def images(objects: Any) -> list[str]:
    """Every container image of every pod template (Deployments, Jobs, CronJobs, Pods) in a render."""
    found: list[str] = []
    if isinstance(objects, dict):
        for key in ("containers", "initContainers"):
            found += [c["image"] for c in objects.get(key) or [] if isinstance(c, dict) and "image" in c]
        for value in objects.values():
            found += images(value)
    elif isinstance(objects, list):
        for value in objects:
            found += images(value)
    return found

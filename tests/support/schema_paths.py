"""The values in values.schema.json that carry a constraint (pattern, enum, bounds, lengths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONSTRAINTS = {
    "pattern",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "minProperties",
    "const",
}


def constrained_paths(schema_file: Path, skip: set[str]) -> list[str]:
    schema = json.loads(schema_file.read_text())
    definitions: dict[str, Any] = schema.get("definitions", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def constrained(node: dict[str, Any]) -> bool:
        parts = [node, resolve(node.get("items", {})), resolve(node.get("additionalProperties") or {})]
        return any(CONSTRAINTS & set(part) for part in parts if isinstance(part, dict))

    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if path in skip:
            return
        if "properties" in node:
            for key, child in node["properties"].items():
                walk(child, f"{path}/{key}")
        elif constrained(node):
            found.append(path)

    walk(schema, "")
    return found

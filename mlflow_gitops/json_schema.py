"""JSON schemas as nested dicts: walking them, and the rewrites the generated schemas/ get.

`walk` visits a schema and every schema nested in it; `make_strict` and `drop_descriptions` are
applied to every vendored schema; `convert_node` turns one node of a CRD's OpenAPI v3 schema (with
Kubernetes' extensions) into plain JSON schema that kubeconform understands.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
SCHEMA_SINGLES = ("additionalProperties", "items", "not")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "items")

Schema = dict[str, Any]


def subschemas(schema: Schema) -> Iterator[Schema]:
    """The schemas directly nested in a schema (not property names, enums or defaults)."""
    for key in SCHEMA_MAPS:
        yield from (value for value in schema.get(key, {}).values() if isinstance(value, dict))
    for key in SCHEMA_SINGLES:
        if isinstance(schema.get(key), dict):
            yield schema[key]
    for key in SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            yield from (value for value in schema[key] if isinstance(value, dict))


def walk(schema: Schema) -> Iterator[Schema]:
    """A schema and every schema nested in it, parents first."""
    yield schema
    for child in subschemas(schema):
        yield from walk(child)


def drop_descriptions(schema: Schema) -> None:
    """Descriptions do not take part in validation and are more than half of the bytes."""
    for node in walk(schema):
        node.pop("description", None)


def make_strict(schema: Schema) -> None:
    """Reject unknown fields in every object that lists its properties and does not opt out."""
    for node in walk(schema):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False


def case_insensitive(pattern: str) -> str:
    """A Go regexp with a leading `(?i)` (e.g. the Prometheus Operator's `^(?i)(abort|warn)?$`) as
    an ECMA-262 one, which has no inline flags: each letter outside a class becomes `[xX]`."""
    out, escaped, in_class = [], False, False
    for ch in pattern.replace("(?i)", "", 1):
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif ch.isascii() and ch.isalpha() and not in_class:
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(ch)
    return "".join(out)


def convert_node(node: Schema) -> None:
    """OpenAPI v3 / Kubernetes extensions -> plain JSON schema, for one node."""
    if isinstance(node.get("pattern"), str) and "(?i)" in node["pattern"]:
        if node["pattern"].count("(?i)") > 1 or not node["pattern"].lstrip("^").startswith("(?i)"):
            raise SystemExit(f"pattern {node['pattern']!r}: only one leading (?i) is converted")
        node["pattern"] = case_insensitive(node["pattern"])
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        if node.get("anyOf") == [{"type": "integer"}, {"type": "string"}]:
            del node["anyOf"]
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        if node.get("nullable"):
            node["oneOf"].append({"type": "null"})
    elif node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]

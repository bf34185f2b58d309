"""Reading JSON Schema nodes: references, unions, types, allowed values, one value against a node."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any

from broadcaster.bounds import bound, fraction, within
from broadcaster.exceptions import ContractError

__all__ = [
    "ALL_TYPES",
    "ANNOTATIONS",
    "FREE_FORMATS",
    "LENGTHS",
    "UNDERSTOOD",
    "accepts",
    "all_types",
    "entries",
    "extra_value",
    "join",
    "json_type",
    "members",
    "pointer",
    "resolve",
    "restricts",
    "show_types",
    "sort_key",
    "types",
    "values",
]

JsonSchema = Mapping[str, Any]
ROOT_PATH = "(payload)"
ALL_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
# Keywords that never restrict what a reader accepts (annotations, or not enforced by pydantic).
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "$schema"}
    | {"discriminator", "$defs", "definitions", "uniqueItems", "contentEncoding", "contentMediaType"}
    | {"x-broadcaster"}
)
# Keywords the walk below compares; anything else in a reader is assumed to restrict.
UNDERSTOOD = frozenset(
    {"type", "enum", "const", "anyOf", "oneOf", "$ref", "format", "pattern", "x-decimal"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    | {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
    | {"properties", "required", "additionalProperties", "patternProperties", "propertyNames"}
    | {"items", "prefixItems"}
)
# Formats pydantic does not check when it reads a string.
FREE_FORMATS = frozenset({"binary", "password"})
VALUE_KEYWORDS = frozenset(
    {"type", "minLength", "maxLength", "pattern", "format"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
LENGTHS = (("minLength", "maxLength"), ("minItems", "maxItems"), ("minProperties", "maxProperties"))


def resolve(node: JsonSchema, root: JsonSchema) -> JsonSchema:
    """`node` with its `$ref` (and a lone `allOf` member) merged in; siblings win."""
    for _ in range(64):  # a chain of references that only point at each other never ends
        if "$ref" in node:
            rest = {key: value for key, value in node.items() if key != "$ref"}
            node = {**pointer(root, str(node["$ref"])), **rest}
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            rest = {key: value for key, value in node.items() if key != "allOf"}
            node = {**node["allOf"][0], **rest}
        else:
            return node
    raise ContractError("a $ref chain never reaches a schema")


def pointer(root: JsonSchema, ref: str) -> JsonSchema:
    if not ref.startswith("#"):
        raise ContractError(f"only local $refs can be compared, not {ref!r}")
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or key not in target:
            raise ContractError(f"$ref {ref!r} points at nothing")
        target = target[key]
    if not isinstance(target, Mapping):
        raise ContractError(f"$ref {ref!r} does not point at a schema")
    return target


def restricts(node: JsonSchema) -> bool:
    return any(key not in ANNOTATIONS for key in node)


def members(node: JsonSchema) -> list[JsonSchema]:
    members = node.get("anyOf") or node.get("oneOf") or []
    return [member for member in members if isinstance(member, Mapping)]


def all_types(node: JsonSchema, root: JsonSchema) -> frozenset[str]:
    """The JSON types a node holds, through its union members."""
    node = resolve(node, root)
    if parts := members(node):
        return frozenset().union(*(all_types(member, root) for member in parts))
    return types(node)


def types(node: JsonSchema) -> frozenset[str]:
    """The JSON types a (resolved, non-union) node holds; "number" includes "integer"."""
    if (allowed := values(node)) is not None:
        kinds = frozenset(json_type(value) for value in allowed)
    elif isinstance(node.get("type"), str):
        kinds = frozenset({node["type"]})
    elif isinstance(node.get("type"), list):
        kinds = frozenset(node["type"])
    else:
        kinds = ALL_TYPES
    return kinds | {"integer"} if "number" in kinds else kinds


def show_types(kinds: frozenset[str]) -> str:
    """JSON types as the output prints them: "integer" within "number" is not repeated."""
    if kinds == ALL_TYPES:
        return "any"
    shown = kinds - {"integer"} if "number" in kinds else kinds
    return " | ".join(sorted(shown))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds: dict[type, str] = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), "string")


def values(node: JsonSchema) -> list[Any] | None:
    """The values an `enum` or `const` allows, or None without one."""
    if "const" in node:
        return [node["const"]]
    if isinstance(node.get("enum"), list):
        return list(node["enum"])
    return None


def sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def extra_value(r: JsonSchema, name: str) -> JsonSchema | None:
    """The schema `r` reads an undeclared key `name` with; None if it rejects the key.

    A model ignores unknown keys; a dict with key patterns (pydantic's
    ``patternProperties`` without ``additionalProperties``) rejects the others.
    """
    for pattern, schema in r.get("patternProperties", {}).items():
        if re.search(pattern, name):
            return dict(schema)
    names = r.get("propertyNames")
    extra = r.get("additionalProperties", "properties" in r or "patternProperties" not in r)
    if extra is False or (isinstance(names, Mapping) and not accepts(name, names, {})):
        return None
    return dict(extra) if isinstance(extra, Mapping) else {}


def entries(w: JsonSchema) -> Iterator[tuple[JsonSchema, JsonSchema]]:
    """(key schema, value schema) of the keys a writer object may send beyond its fields.

    A model's schema without ``additionalProperties`` sends only its fields: pydantic's
    serializer never writes a key it does not declare.
    """
    for pattern, value in w.get("patternProperties", {}).items():
        yield {"pattern": pattern}, value
    extra = w.get("additionalProperties")
    if extra is True or isinstance(extra, Mapping):
        key = w.get("propertyNames", {})
        yield (dict(key) if isinstance(key, Mapping) else {}), (extra if isinstance(extra, Mapping) else {})


def join(path: str, name: str) -> str:
    return name if path == ROOT_PATH else f"{path}.{name}"


def accepts(value: Any, r: JsonSchema, root: JsonSchema) -> bool:
    """Whether reader schema `r` accepts the JSON value `value`; unsure means no."""
    r = resolve(r, root)
    if parts := members(r):
        return any(accepts(value, member, root) for member in parts)
    if (allowed := values(r)) is not None:
        return any(sort_key(value) == sort_key(option) for option in allowed)
    # An object, array or Decimal reader is not judged from a value alone.
    if set(r) - ANNOTATIONS - VALUE_KEYWORDS or json_type(value) not in types(r):
        return False
    if isinstance(value, str):
        return string_ok(value, r)
    return not isinstance(value, int | float) or isinstance(value, bool) or number_ok(Fraction(value), r)


def string_ok(value: str, r: JsonSchema) -> bool:
    if len(value) < r.get("minLength", 0) or len(value) > r.get("maxLength", len(value)):
        return False
    if "pattern" in r and not re.search(r["pattern"], value):
        return False
    return r.get("format") in (None, *FREE_FORMATS)


def number_ok(value: Fraction, r: JsonSchema) -> bool:
    for lower in (True, False):
        limit = bound(r, lower, integers=False)
        if limit is not None and not within((value, False), limit, lower):
            return False
    return "multipleOf" not in r or (value / fraction(r["multipleOf"])).denominator == 1

"""Whether a schema change breaks an event's producers or consumers.

What counts as breaking is kept simple and the same for published and consumed events,
because in this design both sides import one schema class and deploy at different times:
old messages meet new readers, and new messages meet old readers. So these break:

- a removed field, and an event a service no longer publishes;
- a changed type (narrowed, widened or replaced: ``int`` to ``float``, ``int`` to ``int | None``);
- a new required field, or a field that became required;
- a narrowed constraint: enum values removed, a bound added or tightened (``max_length``,
  ``gt``), a pattern or format added or changed, unknown keys no longer accepted.

These do not: an added optional field, a field no longer required, a relaxed constraint,
added enum values, an event newly published or consumed, a new minor version. A breaking
change is allowed when the event's schema major version (``schema_version = "major.minor"``)
went up, since consumers read only the majors they know and upcast older ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcaster.exceptions import ContractError
from broadcaster.snapshot import META

__all__ = ["Change", "compare", "compare_schemas"]

JsonSchema = Mapping[str, Any]

ROOT_PATH = "(payload)"

_ALL_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
# (lower or upper bound, inclusive keyword, exclusive keyword); the tighter of the two wins.
_BOUNDS: tuple[tuple[str, str, str | None], ...] = (
    ("lower", "minimum", "exclusiveMinimum"),
    ("upper", "maximum", "exclusiveMaximum"),
    ("lower", "minLength", None),
    ("upper", "maxLength", None),
    ("lower", "minItems", None),
    ("upper", "maxItems", None),
    ("lower", "minProperties", None),
    ("upper", "maxProperties", None),
)
# Keywords that only restrict: adding or changing one narrows, removing one widens.
_RESTRICTIONS = ("pattern", "format", "multipleOf", "uniqueItems")


@dataclass(frozen=True)
class Change:
    """One difference between the snapshot and the live contract."""

    event: str
    path: str
    what: str
    breaking: bool
    allowed: bool = False  # breaking, but the event's major version went up

    def __str__(self) -> str:
        if not self.breaking:
            verdict = "compatible"
        else:
            verdict = "breaking (allowed: major version went up)" if self.allowed else "BREAKING"
        return f"{verdict}: {self.event} {self.path}: {self.what}"


def compare(old: Mapping[str, JsonSchema], new: Mapping[str, JsonSchema]) -> list[Change]:
    """Every change from the snapshot `old` to the live `new` (event -> schema document)."""
    changes: list[Change] = []
    for event in sorted(old.keys() | new.keys()):
        if event not in new:
            changes.append(_removed_event(event, _meta(old[event])))
        elif event not in old:
            changes.append(Change(event, ROOT_PATH, f"new event ({_roles(_meta(new[event]))})", breaking=False))
        else:
            changes.extend(_compare_event(event, old[event], new[event]))
    return changes


def compare_schemas(old: JsonSchema, new: JsonSchema) -> list[tuple[str, str, bool]]:
    """(field path, what changed, breaking) for each difference between two JSON Schemas.

    `$ref`s are resolved against each schema's own root (``#/$defs/...``); annotations
    (title, description, default, examples) are ignored.
    """
    differ = _Differ(old, new)
    differ.node(old, new, ROOT_PATH, frozenset())
    return differ.changes


def _compare_event(event: str, old: JsonSchema, new: JsonSchema) -> list[Change]:
    old_meta, new_meta = _meta(old), _meta(new)
    old_version, new_version = str(old_meta.get("schemaVersion", "1.0")), str(new_meta.get("schemaVersion", "1.0"))
    allowed = _major(new_version) > _major(old_version)
    found = compare_schemas(old, new)
    if old_meta.get("published") and not new_meta.get("published"):
        found.append((ROOT_PATH, "no longer published: its consumers get nothing", True))
    if old_version != new_version:
        went_down = _major(new_version) < _major(old_version)
        found.append((ROOT_PATH, f"schema_version {old_version} -> {new_version}", went_down))
    return [Change(event, path, what, breaking, allowed=breaking and allowed) for path, what, breaking in found]


def _removed_event(event: str, meta: Mapping[str, Any]) -> Change:
    if meta.get("published"):
        return Change(event, ROOT_PATH, "event removed: no longer published, its consumers get nothing", True)
    return Change(event, ROOT_PATH, "event removed: no longer consumed", breaking=False)


def _meta(document: JsonSchema) -> Mapping[str, Any]:
    meta = document.get(META, {})
    return meta if isinstance(meta, Mapping) else {}


def _roles(meta: Mapping[str, Any]) -> str:
    return " and ".join(role for role in ("published", "consumed") if meta.get(role)) or "unused"


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class _Differ:
    """Walks two schemas side by side; `changes` collects (path, what, breaking)."""

    old_root: JsonSchema
    new_root: JsonSchema
    changes: list[tuple[str, str, bool]] = field(default_factory=list)

    def node(self, old: JsonSchema, new: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        """Compare two schema nodes at `path`; `seen` holds the $ref pairs being compared (recursion)."""
        refs = (str(old.get("$ref", "")), str(new.get("$ref", "")))
        if all(refs) and refs in seen:
            return  # a recursive model: this pair is already being compared further up
        seen = seen | {refs} if all(refs) else seen
        old, new = _resolve(old, self.old_root), _resolve(new, self.new_root)
        old_types, new_types = _types(old, self.old_root), _types(new, self.new_root)
        if old_types != new_types:
            self.changes.append((path, _type_change(old_types, new_types), True))
        if _variants(old) or _variants(new):
            self._variants(old, new, path, seen, report=old_types == new_types)
            return  # a union's keywords live in its members, compared pairwise above
        self._values(old, new, path)
        self._constraints(old, new, path)
        if {"object"} <= old_types & new_types:
            self._object(old, new, path, seen)
        if {"array"} <= old_types & new_types:
            self._array(old, new, path, seen)

    def _variants(
        self, old: JsonSchema, new: JsonSchema, path: str, seen: frozenset[tuple[str, str]], *, report: bool
    ) -> None:
        old_members, new_members = _variants(old) or [old], _variants(new) or [new]
        pairs, removed, added = _pair(old_members, new_members, self.old_root, self.new_root)
        for old_member, new_member in pairs:
            self.node(old_member, new_member, path, seen)
        if report:  # otherwise the type change above already says it
            for member in removed:
                self.changes.append((path, f"union member {_label(member, self.old_root)} removed", True))
            for member in added:
                self.changes.append((path, f"union member {_label(member, self.new_root)} added", True))

    def _values(self, old: JsonSchema, new: JsonSchema, path: str) -> None:
        old_values, new_values = _allowed_values(old), _allowed_values(new)
        if old_values is None and new_values is not None:
            self.changes.append((path, f"now restricted to the values {_show(new_values)}", True))
        elif old_values is not None and new_values is None:
            self.changes.append((path, f"no longer restricted to the values {_show(old_values)}", False))
        elif old_values is not None and new_values is not None:
            if removed := old_values - new_values:
                self.changes.append((path, f"values removed: {_show(removed)}", True))
            if added := new_values - old_values:
                self.changes.append((path, f"values added: {_show(added)}", False))

    def _constraints(self, old: JsonSchema, new: JsonSchema, path: str) -> None:
        for side, inclusive, exclusive in _BOUNDS:
            old_bound, new_bound = _bound(old, inclusive, exclusive), _bound(new, inclusive, exclusive)
            if old_bound != new_bound:
                narrowed = _tighter(side, new_bound, old_bound)
                what = f"{inclusive} {_show_bound(side, old_bound)} -> {_show_bound(side, new_bound)}"
                self.changes.append((path, f"{what} ({'narrowed' if narrowed else 'relaxed'})", narrowed))
        for keyword in _RESTRICTIONS:
            old_value, new_value = old.get(keyword) or None, new.get(keyword) or None
            if old_value != new_value:
                narrowed = new_value is not None
                what = f"{keyword} {old_value!r} -> {new_value!r}"
                self.changes.append((path, f"{what} ({'narrowed' if narrowed else 'relaxed'})", narrowed))

    def _object(self, old: JsonSchema, new: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name in old_fields:
            where = _join(path, name)
            if name not in new_fields:
                self.changes.append((where, "field removed", True))
                continue
            self.node(old_fields[name], new_fields[name], where, seen)
            if name in new_required and name not in old_required:
                self.changes.append((where, "field became required", True))
            elif name in old_required and name not in new_required:
                self.changes.append((where, "field no longer required", False))
        for name in new_fields.keys() - old_fields.keys():
            required = name in new_required
            what = "new required field" if required else "new optional field"
            self.changes.append((_join(path, name), what, required))
        self._extra_keys(old.get("additionalProperties", True), new.get("additionalProperties", True), path, seen)

    def _extra_keys(self, old: Any, new: Any, path: str, seen: frozenset[tuple[str, str]]) -> None:
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            self.node(old, new, _join(path, "*"), seen)
        elif old is not False and new is False:
            self.changes.append((path, "unknown fields no longer accepted", True))
        elif old is False and new is not False:
            self.changes.append((path, "unknown fields now accepted", False))
        elif old is True and isinstance(new, Mapping):
            self.changes.append((_join(path, "*"), "values of other keys now restricted", True))
        elif isinstance(old, Mapping) and new is True:
            self.changes.append((_join(path, "*"), "values of other keys no longer restricted", False))

    def _array(self, old: JsonSchema, new: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        old_items, new_items = old.get("items"), new.get("items")
        if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
            self.node(old_items, new_items, f"{path}[]", seen)
        # A tuple's length change shows in minItems/maxItems; compare the positions both have.
        pairs = zip(old.get("prefixItems", ()), new.get("prefixItems", ()), strict=False)
        for index, (old_item, new_item) in enumerate(pairs):
            self.node(old_item, new_item, f"{path}[{index}]", seen)


def _resolve(node: JsonSchema, root: JsonSchema) -> JsonSchema:
    """`node` with its `$ref` (and a lone `allOf` member) merged in; siblings win."""
    for _ in range(64):  # a chain of references that only point at each other never ends
        if "$ref" in node:
            rest = {key: value for key, value in node.items() if key != "$ref"}
            node = {**_pointer(root, str(node["$ref"])), **rest}
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            rest = {key: value for key, value in node.items() if key != "allOf"}
            node = {**node["allOf"][0], **rest}
        else:
            return node
    raise ContractError("a $ref chain never reaches a schema")


def _pointer(root: JsonSchema, ref: str) -> JsonSchema:
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


def _variants(node: JsonSchema) -> list[JsonSchema]:
    members = node.get("anyOf") or node.get("oneOf") or []
    return [member for member in members if isinstance(member, Mapping)]


def _types(node: JsonSchema, root: JsonSchema) -> frozenset[str]:
    """The JSON types a node accepts; an integer is a number, so "number" includes it."""
    node = _resolve(node, root)
    if (values := _allowed_values(node)) is not None:
        types = frozenset(_json_type(json.loads(value)) for value in values)
    elif isinstance(node.get("type"), str):
        types = frozenset({node["type"]})
    elif isinstance(node.get("type"), list):
        types = frozenset(node["type"])
    elif members := _variants(node):
        types = frozenset().union(*(_types(member, root) for member in members))
    else:
        types = _ALL_TYPES
    return types | {"integer"} if "number" in types else types


def _type_change(old: frozenset[str], new: frozenset[str]) -> str:
    kind = "narrowed" if new < old else "widened" if old < new else "changed"
    return f"type {kind}: {_show_types(old)} -> {_show_types(new)}"


def _show_types(types: frozenset[str]) -> str:
    if types == _ALL_TYPES:
        return "any"
    shown = types - {"integer"} if "number" in types else types
    return " | ".join(sorted(shown))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds: dict[type, str] = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), "string")


def _allowed_values(node: JsonSchema) -> frozenset[str] | None:
    """The JSON texts of the values an `enum` or `const` allows, or None without one."""
    if "const" in node:
        return frozenset({json.dumps(node["const"], sort_keys=True)})
    if isinstance(node.get("enum"), list):
        return frozenset(json.dumps(value, sort_keys=True) for value in node["enum"])
    return None


def _show(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def _bound(node: JsonSchema, inclusive: str, exclusive: str | None) -> tuple[float, bool] | None:
    """(value, exclusive) of the tighter of a node's inclusive and exclusive bound."""
    bounds = [(float(node[inclusive]), False)] if inclusive in node else []
    if exclusive and exclusive in node and not isinstance(node[exclusive], bool):
        bounds.append((float(node[exclusive]), True))
    if not bounds:
        return None
    return max(bounds, key=_tightness("lower" if inclusive.startswith("min") else "upper"))


def _tightness(side: str) -> Callable[[tuple[float, bool]], tuple[float, bool]]:
    # A higher lower bound, or a lower upper bound, accepts less; exclusive beats inclusive.
    return (lambda b: (b[0], b[1])) if side == "lower" else (lambda b: (-b[0], b[1]))


def _tighter(side: str, new: tuple[float, bool] | None, old: tuple[float, bool] | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    key = _tightness(side)
    return key(new) > key(old)


def _show_bound(side: str, bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "none"
    value, exclusive = bound
    number = int(value) if value.is_integer() else value
    operator = (">" if exclusive else ">=") if side == "lower" else ("<" if exclusive else "<=")
    return f"{operator} {number}"


def _pair(
    olds: Sequence[JsonSchema], news: Sequence[JsonSchema], old_root: JsonSchema, new_root: JsonSchema
) -> tuple[list[tuple[JsonSchema, JsonSchema]], list[JsonSchema], list[JsonSchema]]:
    """Match union members: by type and title first, then by type alone where that is unambiguous."""
    left, right = list(olds), list(news)
    pairs = []
    keys: tuple[Callable[[JsonSchema, JsonSchema], object], ...] = (
        lambda member, root: (_types(member, root), _resolve(member, root).get("title")),
        _types,
    )
    for key in keys:
        for old in list(left):
            wanted = key(old, old_root)
            same_old = [member for member in left if key(member, old_root) == wanted]
            same_new = [member for member in right if key(member, new_root) == wanted]
            if len(same_old) == 1 and len(same_new) == 1:
                pairs.append((old, same_new[0]))
                left.remove(old)
                right.remove(same_new[0])
    return pairs, left, right


def _label(member: JsonSchema, root: JsonSchema) -> str:
    resolved = _resolve(member, root)
    return str(resolved.get("title") or _show_types(_types(resolved, root)))


def _join(path: str, name: str) -> str:
    return name if path == ROOT_PATH else f"{path}.{name}"

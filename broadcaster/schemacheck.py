"""What a writer's JSON Schema may send that a reader's rejects: the core of the compatibility check.

A published event is compatible when everything the new producer can send is accepted
by a consumer still on the old schema; a consumed event when everything a producer on
the old schema sent is accepted by the new consumer. So the check always compares the
*serialization-mode* JSON Schema of the writer (what `model_dump_json(by_alias=True)`
can produce) with the *validation-mode* JSON Schema of the reader, and `findings()`
lists what the writer may send that the reader rejects.

It sees what pydantic writes into JSON Schema, plus what `Generator` adds (Decimal
``max_digits``/``decimal_places`` and exact bounds, under ``x-decimal``). It cannot see
custom validators (``@field_validator``, ``AfterValidator`` ...) nor a serializer
without a return annotation: those are reported as notes, never checked. Where it cannot
prove that a value passes (two different patterns, a keyword it does not know) it says
breaking: a needless "breaking" costs a look, a wrong "compatible" costs every message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from broadcaster.exceptions import ContractError

__all__ = ["Finding", "Generator", "findings"]

JsonSchema = Mapping[str, Any]

ROOT_PATH = "(payload)"
NUMERIC = frozenset({"integer", "number"})
_ALL_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
# Keywords that never restrict what a reader accepts (annotations, or not enforced by pydantic).
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "$schema"}
    | {"discriminator", "$defs", "definitions", "uniqueItems", "contentEncoding", "contentMediaType"}
    | {"x-broadcaster"}
)
# Keywords the walk below compares; anything else in a reader is assumed to restrict.
_UNDERSTOOD = frozenset(
    {"type", "enum", "const", "anyOf", "oneOf", "$ref", "format", "pattern", "x-decimal"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    | {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
    | {"properties", "required", "additionalProperties", "patternProperties", "propertyNames"}
    | {"items", "prefixItems"}
)
# Formats pydantic does not check when it reads a string.
_FREE_FORMATS = frozenset({"binary", "password"})
_VALUE_KEYWORDS = frozenset(
    {"type", "minLength", "maxLength", "pattern", "format"}
    | {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_LENGTHS = (("minLength", "maxLength"), ("minItems", "maxItems"), ("minProperties", "maxProperties"))


class Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, plus what a compatibility check needs and JSON Schema lacks.

    - a Decimal carries ``x-decimal``: its ``max_digits``, ``decimal_places`` and bounds,
      exactly (pydantic writes the bounds as floats in validation mode, none at all in
      serialization mode);
    - in serialization mode every field is required: the producer always writes them all.
    """

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        """The Decimal schema pydantic writes, with its constraints under ``x-decimal``."""
        json_schema = super().decimal_schema(schema)
        keys = ("max_digits", "decimal_places", "ge", "gt", "le", "lt", "multiple_of")
        constraints = {key: _exact(schema[key]) for key in keys if schema.get(key) is not None}  # type: ignore[literal-required]
        return {**json_schema, "x-decimal": constraints}

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        """In serialization mode, every field the producer writes (all of them)."""
        if self.mode == "serialization":
            return field.get("serialization_exclude_if") is None
        return super().field_is_required(field, total)


def _exact(value: object) -> object:
    """A constraint as JSON without losing digits: ints as they are, Decimals as strings."""
    if isinstance(value, bool | int | float):
        return value
    return str(value)


@dataclass(frozen=True)
class Finding:
    """Something the writer may send that the reader rejects, at a field path."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def findings(sent: JsonSchema, accepted: JsonSchema, *, writer_is_new: bool) -> list[Finding]:
    """What a writer whose serialized form is `sent` may send that `accepted` rejects.

    Both are whole JSON Schema documents (their ``$ref``s resolve against their own
    root). `writer_is_new` only words the findings: a new writer *widened* the
    contract, a new reader *narrowed* it; old and new values print in that order.
    """
    walk = _Walk(sent, accepted, writer_is_new)
    walk.node(sent, accepted, ROOT_PATH, frozenset())
    return walk.found


@dataclass
class _Walk:
    """Walks a writer schema and a reader schema side by side."""

    w_root: JsonSchema
    r_root: JsonSchema
    writer_is_new: bool
    found: list[Finding] = field(default_factory=list)

    # -- wording: old and new, from writer and reader ----------------------------------

    def add(self, path: str, what: str) -> None:
        self.found.append(Finding(path, what))

    def change(self, path: str, subject: str, sent: str, accepted: str) -> None:
        old, new = (accepted, sent) if self.writer_is_new else (sent, accepted)
        self.add(path, f"{subject} {old} -> {new} ({'widened' if self.writer_is_new else 'narrowed'})")

    def child(self) -> _Walk:
        return _Walk(self.w_root, self.r_root, self.writer_is_new)

    # -- nodes -------------------------------------------------------------------------

    def node(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        """Record what `w` may hold that `r` rejects; `seen`: $ref pairs being compared (recursion)."""
        refs = (str(w.get("$ref", "")), str(r.get("$ref", "")))
        if all(refs):
            if refs in seen:
                return  # a recursive model: this pair is already being compared further up
            seen = seen | {refs}
        w, r = _resolve(w, self.w_root), _resolve(r, self.r_root)
        if not _restricts(r):
            return
        if w_members := _members(w):
            self.writer_union(w_members, r, path, seen)
            return
        if (values := _values(w)) is not None:
            self.values(values, r, path)
            return
        if "x-decimal" in r:
            self.decimal(w, r, path)
            return
        if r_members := _members(r):
            self.union(w, r_members, path, seen)
            return
        self.single(w, r, path, seen)

    def types(self, sent: frozenset[str], accepted: frozenset[str], path: str) -> bool:
        """Report the JSON types the writer sends and the reader rejects; False if none is left."""
        if sent <= accepted:
            return True
        old, new = (accepted, sent) if self.writer_is_new else (sent, accepted)
        kind = "widened" if old < new else "narrowed" if new < old else "changed"
        self.add(path, f"type {_show_types(old)} -> {_show_types(new)} ({kind})")
        return bool(sent & accepted)

    def writer_union(
        self, members: Sequence[JsonSchema], r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """Each member must fit: the types no reader member takes are reported once, for the union."""
        resolved = [_resolve(member, self.w_root) for member in members]
        accepted = _all_types(r, self.r_root)
        self.types(frozenset().union(*(_all_types(m, self.w_root) for m in resolved)), accepted, path)
        for member in resolved:
            if _all_types(member, self.w_root) <= accepted:
                self.node(member, r, path, seen)

    def single(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        w_types, r_types = _types(w), _types(r)
        if "x-decimal" in w and "number" in r_types:
            self.decimal_as_number(w, r, path)  # pydantic reads a float from a numeric string
            return
        if not self.types(w_types, r_types, path):
            return
        if (allowed := _values(r)) is not None:
            shown = json.dumps(sorted(allowed, key=_sort_key))
            self.change(path, "allowed values", "any", shown)
            return
        self.unknown_keywords(w, r, path)
        common = w_types & r_types
        if "string" in common:
            self.strings(w, r, path)
        if common & NUMERIC:
            self.bounds(w, r, path, integers=not {"number"} & w_types)
        if "object" in common:
            self.object(w, r, path, seen)
        if "array" in common:
            self.array(w, r, path, seen)
        for low, high in _LENGTHS:
            self.length(w, r, path, low, high)

    def union(
        self, w: JsonSchema, r_members: Sequence[JsonSchema], path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """A writer value must fit one reader member: the closest one's findings are reported."""
        if not self.types(_types(w), _all_types({"anyOf": r_members}, self.r_root), path):
            return
        best: list[Finding] | None = None
        for member in r_members:
            if not _types(w) & _all_types(member, self.r_root):
                continue
            walk = self.child()
            walk.node(w, member, path, seen)
            if not walk.found:
                return
            if best is None or len(walk.found) < len(best):
                best = walk.found
        self.found.extend(best or [])

    def values(self, values: Sequence[Any], r: JsonSchema, path: str) -> None:
        rejected = [value for value in values if not _accepts(value, r, self.r_root)]
        if rejected:
            shown = json.dumps(sorted(rejected, key=_sort_key))
            if self.writer_is_new:
                self.add(path, f"values added: {shown}, which the old schema rejects (widened)")
            else:
                self.add(path, f"values removed: {shown}, which the old schema sends (narrowed)")

    def unknown_keywords(self, w: JsonSchema, r: JsonSchema, path: str) -> None:
        for keyword in sorted(set(r) - _UNDERSTOOD - _ANNOTATIONS):
            if w.get(keyword) != r[keyword]:
                self.add(path, f"keyword {keyword!r} {json.dumps(r[keyword])} cannot be compared: assumed breaking")

    def strings(self, w: JsonSchema, r: JsonSchema, path: str) -> None:
        for keyword in ("pattern", "format"):
            wanted = r.get(keyword)
            if wanted is None or (keyword == "format" and wanted in _FREE_FORMATS) or w.get(keyword) == wanted:
                continue
            if w.get(keyword) is None:
                self.change(path, keyword, "null", json.dumps(wanted))
            else:
                old, new = (wanted, w[keyword]) if self.writer_is_new else (w[keyword], wanted)
                self.add(path, f"{keyword} {json.dumps(old)} -> {json.dumps(new)} (changed)")

    def length(self, w: JsonSchema, r: JsonSchema, path: str, low: str, high: str) -> None:
        for keyword, lower in ((low, True), (high, False)):
            if keyword not in r:
                continue
            limit, sent = r[keyword], w.get(keyword)
            if sent is None or (sent < limit if lower else sent > limit):
                self.change(path, keyword, "none" if sent is None else json.dumps(sent), json.dumps(limit))

    def bounds(self, w: JsonSchema, r: JsonSchema, path: str, *, integers: bool) -> None:
        for lower in (True, False):
            needed = _bound(r, lower, integers=False)
            if needed is None:
                continue
            sent = _bound(w, lower, integers=integers)
            if sent is None or not _within(sent, needed, lower):
                self.change(
                    path, "minimum" if lower else "maximum", _show_bound(sent, lower), _show_bound(needed, lower)
                )
        step = r.get("multipleOf")
        if step is not None and not _divides(_fraction(step), w.get("multipleOf"), integers=integers):
            self.change(path, "multipleOf", json.dumps(w.get("multipleOf")), json.dumps(step))

    def decimal(self, w: JsonSchema, r: JsonSchema, path: str) -> None:
        """A reader Decimal: digits, places and bounds as pydantic checks them, on any JSON form."""
        need = _decimal_limits(r)
        if "x-decimal" in w:
            have = _decimal_limits(w)
        elif _types(w) <= {"integer"}:
            have = _integer_limits(w)
        elif _types(w) <= NUMERIC and not need.keys() & {"max_digits", "decimal_places", "multiple_of"}:
            have = {"ge": _bound(w, True, integers=False), "le": _bound(w, False, integers=False)}
        else:
            self.add(path, f"sends {_show_types(_types(w))} where a Decimal is read: not every such value is one")
            return
        for name, wanted in need.items():
            sent = have.get(name)
            if name in ("ge", "le"):
                lower = name == "ge"
                if sent is None or not _within(sent, wanted, lower):
                    self.change(
                        path, "minimum" if lower else "maximum", _show_bound(sent, lower), _show_bound(wanted, lower)
                    )
            elif name == "multiple_of":
                if sent is None or (sent / wanted).denominator != 1:
                    self.change(path, name, "none" if sent is None else str(sent), str(wanted))
            elif sent is None or sent > wanted:
                self.change(path, name, "none" if sent is None else str(sent), str(wanted))

    def decimal_as_number(self, w: JsonSchema, r: JsonSchema, path: str) -> None:
        have = _decimal_limits(w)
        for lower in (True, False):
            needed, sent = _bound(r, lower, integers=False), have.get("ge" if lower else "le")
            if needed is not None and (sent is None or not _within(sent, needed, lower)):
                self.change(
                    path, "minimum" if lower else "maximum", _show_bound(sent, lower), _show_bound(needed, lower)
                )
        if "multipleOf" in r:
            self.change(path, "multipleOf", "null", json.dumps(r["multipleOf"]))

    def object(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        w_fields, r_fields = w.get("properties", {}), r.get("properties", {})
        always = set(w.get("required", ()))
        for name in r.get("required", ()):
            if name not in always:
                where = _join(path, name)
                if self.writer_is_new:
                    gone = "field removed" if name not in w_fields else "field no longer always sent"
                    self.add(where, f"{gone}, but the old schema requires it")
                else:
                    self.add(where, "new required field" if name not in w_fields else "field became required")
        for name, sent in w_fields.items():
            target = r_fields[name] if name in r_fields else _extra_value(r, name)
            if target is None:
                self.add(_join(path, name), self.forbidden(f"field {name!r}"))
            else:
                self.node(sent, target, _join(path, name), seen)
        for key_schema, value_schema in _entries(w):
            self.entries(key_schema, value_schema, r, path, seen)

    def forbidden(self, what: str) -> str:
        if self.writer_is_new:
            return f"new {what}, which the old schema rejects (it forbids unknown fields)"
        return f"{what} is sent by the old schema, which now rejects it (unknown fields no longer accepted)"

    def entries(
        self, key: JsonSchema, value: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """Keys the writer sends beyond its declared fields (a dict, extra='allow')."""
        where = _join(path, "*")
        if "properties" in r and "additionalProperties" not in r and "patternProperties" not in r:
            return  # a model ignoring unknown fields
        for pattern, target in r.get("patternProperties", {}).items():
            if key.get("pattern") == pattern:
                self.node(value, target, where, seen)
                return
        extra = r.get("additionalProperties", "patternProperties" not in r)
        if extra is False:
            self.add(where, self.forbidden("keys other than the declared fields"))
            return
        if isinstance(r.get("propertyNames"), Mapping):
            self.node({"type": "string", **key}, r["propertyNames"], f"{where} (key)", seen)
        if isinstance(extra, Mapping):
            self.node(value, extra, where, seen)

    def array(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        w_prefix, r_prefix = w.get("prefixItems", []), r.get("prefixItems", [])
        w_items, r_items = w.get("items", {}), r.get("items", {})
        count = max(len(w_prefix), len(r_prefix))
        for index in range(count):
            sent = w_prefix[index] if index < len(w_prefix) else w_items
            wanted = r_prefix[index] if index < len(r_prefix) else r_items
            if sent is not False and wanted is not False and isinstance(wanted, Mapping):
                self.node(sent, wanted, f"{path}[{index}]", seen)
        # A tuple has no `items`: pydantic sends exactly its positions (maxItems says how many).
        if ("items" in w or not w_prefix) and isinstance(w_items, Mapping) and isinstance(r_items, Mapping):
            self.node(w_items, r_items, f"{path}[]", seen)


# -- schema helpers ---------------------------------------------------------------------


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


def _restricts(node: JsonSchema) -> bool:
    return any(key not in _ANNOTATIONS for key in node)


def _members(node: JsonSchema) -> list[JsonSchema]:
    members = node.get("anyOf") or node.get("oneOf") or []
    return [member for member in members if isinstance(member, Mapping)]


def _all_types(node: JsonSchema, root: JsonSchema) -> frozenset[str]:
    """The JSON types a node holds, through its union members."""
    node = _resolve(node, root)
    if members := _members(node):
        return frozenset().union(*(_all_types(member, root) for member in members))
    return _types(node)


def _types(node: JsonSchema) -> frozenset[str]:
    """The JSON types a (resolved, non-union) node holds; "number" includes "integer"."""
    if (values := _values(node)) is not None:
        types = frozenset(_json_type(value) for value in values)
    elif isinstance(node.get("type"), str):
        types = frozenset({node["type"]})
    elif isinstance(node.get("type"), list):
        types = frozenset(node["type"])
    else:
        types = _ALL_TYPES
    return types | {"integer"} if "number" in types else types


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


def _values(node: JsonSchema) -> list[Any] | None:
    """The values an `enum` or `const` allows, or None without one."""
    if "const" in node:
        return [node["const"]]
    if isinstance(node.get("enum"), list):
        return list(node["enum"])
    return None


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _extra_value(r: JsonSchema, name: str) -> JsonSchema | None:
    """The schema `r` reads an undeclared key `name` with; None if it rejects the key.

    A model ignores unknown keys; a dict with key patterns (pydantic's
    ``patternProperties`` without ``additionalProperties``) rejects the others.
    """
    for pattern, schema in r.get("patternProperties", {}).items():
        if re.search(pattern, name):
            return dict(schema)
    names = r.get("propertyNames")
    extra = r.get("additionalProperties", "properties" in r or "patternProperties" not in r)
    if extra is False or (isinstance(names, Mapping) and not _accepts(name, names, {})):
        return None
    return dict(extra) if isinstance(extra, Mapping) else {}


def _entries(w: JsonSchema) -> Iterator[tuple[JsonSchema, JsonSchema]]:
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


def _join(path: str, name: str) -> str:
    return name if path == ROOT_PATH else f"{path}.{name}"


# -- numbers, exactly ---------------------------------------------------------------------

Bound = tuple[Fraction, bool]  # (value, exclusive)


def _fraction(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ContractError(f"a bound must be a number, not {json.dumps(value, default=str)}")
    return Fraction(value)


def _bound(node: JsonSchema, lower: bool, *, integers: bool) -> Bound | None:
    """The tighter of a node's inclusive and exclusive bound on one side, exactly."""
    inclusive, exclusive = ("minimum", "exclusiveMinimum") if lower else ("maximum", "exclusiveMaximum")
    bounds = [(_fraction(node[inclusive]), False)] if inclusive in node else []
    if exclusive in node and not isinstance(node[exclusive], bool):
        bounds.append((_fraction(node[exclusive]), True))
    if not bounds:
        return None
    value, strict = max(bounds, key=lambda b: (b[0], b[1])) if lower else min(bounds, key=lambda b: (b[0], not b[1]))
    if integers:  # an integer above 0.5 is at least 1: compare what can actually be sent
        value = (
            Fraction(math.floor(value) + 1 if strict else math.ceil(value))
            if lower
            else Fraction(math.ceil(value) - 1 if strict else math.floor(value))
        )
        strict = False
    return value, strict


def _within(sent: Bound, needed: Bound, lower: bool) -> bool:
    """Whether every value within the writer's bound is within the reader's."""
    (have, have_strict), (want, want_strict) = sent, needed
    if have == want:
        return have_strict or not want_strict
    return have > want if lower else have < want


def _show_bound(bound: Bound | None, lower: bool) -> str:
    if bound is None:
        return "none"
    value, strict = bound
    number = str(value.numerator) if value.denominator == 1 else str(float(value))
    return f"{('>' if lower else '<') + ('' if strict else '=')} {number}"


def _divides(step: Fraction, sent: object, *, integers: bool) -> bool:
    if sent is not None:
        return (_fraction(sent) / step).denominator == 1
    return integers and step.numerator == 1  # every integer is a multiple of 1/n


def _decimal_limits(node: JsonSchema) -> dict[str, Any]:
    """A Decimal's limits: bounds as Bounds, digits and places as ints, whole digits derived."""
    raw = node.get("x-decimal", {})
    limits: dict[str, Any] = {}
    for key, lower, strict in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
        if key in raw:
            limits["ge" if lower else "le"] = (_fraction(raw[key]), strict)
    for key in ("max_digits", "decimal_places"):
        if key in raw:
            limits[key] = int(raw[key])
    if "multiple_of" in raw:
        limits["multiple_of"] = _fraction(raw["multiple_of"])
    if "max_digits" in raw:
        limits["whole_digits"] = int(raw["max_digits"]) - int(raw.get("decimal_places", 0))
    return limits


def _integer_limits(node: JsonSchema) -> dict[str, Any]:
    """An integer writer's limits in a Decimal reader's terms."""
    limits: dict[str, Any] = {"decimal_places": 0}
    low, high = _bound(node, True, integers=True), _bound(node, False, integers=True)
    if low is not None:
        limits["ge"] = low
    if high is not None:
        limits["le"] = high
    if low is not None and high is not None:
        digits = max(len(str(abs(low[0].numerator))), len(str(abs(high[0].numerator))))
        limits["max_digits"] = limits["whole_digits"] = digits
    return limits


# -- one value against a reader schema --------------------------------------------------


def _accepts(value: Any, r: JsonSchema, root: JsonSchema) -> bool:
    """Whether reader schema `r` accepts the JSON value `value`; unsure means no."""
    r = _resolve(r, root)
    if members := _members(r):
        return any(_accepts(value, member, root) for member in members)
    if (allowed := _values(r)) is not None:
        return any(_sort_key(value) == _sort_key(option) for option in allowed)
    # An object, array or Decimal reader is not judged from a value alone.
    if set(r) - _ANNOTATIONS - _VALUE_KEYWORDS or _json_type(value) not in _types(r):
        return False
    if isinstance(value, str):
        return _string_ok(value, r)
    return not isinstance(value, int | float) or isinstance(value, bool) or _number_ok(Fraction(value), r)


def _string_ok(value: str, r: JsonSchema) -> bool:
    if len(value) < r.get("minLength", 0) or len(value) > r.get("maxLength", len(value)):
        return False
    if "pattern" in r and not re.search(r["pattern"], value):
        return False
    return r.get("format") in (None, *_FREE_FORMATS)


def _number_ok(value: Fraction, r: JsonSchema) -> bool:
    for lower in (True, False):
        bound = _bound(r, lower, integers=False)
        if bound is not None and not _within((value, False), bound, lower):
            return False
    return "multipleOf" not in r or (value / _fraction(r["multipleOf"])).denominator == 1

"""What a writer's JSON Schema may send that a reader's rejects: the core of the compatibility check.

A published event is compatible when everything the new producer can send is accepted
by a consumer still on the old schema; a consumed event when everything a producer on
the old schema sent is accepted by the new consumer. So the check always compares the
*serialization-mode* JSON Schema of the writer (what `model_dump_json(by_alias=True)`
can produce) with the *validation-mode* JSON Schema of the reader, and `findings()`
lists what the writer may send that the reader rejects.

It sees what pydantic writes into JSON Schema, plus what `broadcaster.snapshot.Generator` adds (Decimal
``max_digits``/``decimal_places`` and exact bounds, under ``x-decimal``). It cannot see
custom validators (``@field_validator``, ``AfterValidator`` ...) nor a serializer
without a return annotation: those are reported as notes, never checked. Where it cannot
prove that a value passes (two different patterns, a keyword it does not know) it says
breaking: a needless "breaking" costs a look, a wrong "compatible" costs every message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadcaster import bounds
from broadcaster import schemanodes as nodes
from broadcaster.schemanodes import ROOT_PATH

__all__ = ["ROOT_PATH", "Finding", "findings"]

JsonSchema = Mapping[str, Any]
NUMERIC = frozenset({"integer", "number"})


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
    walk = _Walk(sent, accepted, _Report(writer_is_new))
    walk.node(sent, accepted, ROOT_PATH, frozenset())
    return walk.report.found


@dataclass
class _Report:
    """The findings, worded from the direction of the change: old and new, widened or narrowed."""

    writer_is_new: bool
    found: list[Finding] = field(default_factory=list)

    def add(self, path: str, what: str) -> None:
        self.found.append(Finding(path, what))

    def change(self, path: str, subject: str, sent: str, accepted: str) -> None:
        old, new = (accepted, sent) if self.writer_is_new else (sent, accepted)
        self.add(path, f"{subject} {old} -> {new} ({'widened' if self.writer_is_new else 'narrowed'})")

    def bound_change(self, path: str, lower: bool, sent: bounds.Bound | None, needed: bounds.Bound) -> None:
        self.change(
            path, "minimum" if lower else "maximum", bounds.show_bound(sent, lower), bounds.show_bound(needed, lower)
        )

    def types(self, sent: frozenset[str], accepted: frozenset[str], path: str) -> bool:
        """Report the JSON types the writer sends and the reader rejects; False if none is left."""
        if sent <= accepted:
            return True
        old, new = (accepted, sent) if self.writer_is_new else (sent, accepted)
        kind = "widened" if old < new else "narrowed" if new < old else "changed"
        self.add(path, f"type {nodes.show_types(old)} -> {nodes.show_types(new)} ({kind})")
        return bool(sent & accepted)

    def values(self, rejected: Sequence[Any], path: str) -> None:
        shown = json.dumps(sorted(rejected, key=nodes.sort_key))
        if self.writer_is_new:
            self.add(path, f"values added: {shown}, which the old schema rejects (widened)")
        else:
            self.add(path, f"values removed: {shown}, which the old schema sends (narrowed)")

    def forbidden(self, what: str) -> str:
        if self.writer_is_new:
            return f"new {what}, which the old schema rejects (it forbids unknown fields)"
        return f"{what} is sent by the old schema, which now rejects it (unknown fields no longer accepted)"


# -- leaves: the keywords of one value, with no schema below them ------------------------


def _unknown_keywords(report: _Report, w: JsonSchema, r: JsonSchema, path: str) -> None:
    for keyword in sorted(set(r) - nodes.UNDERSTOOD - nodes.ANNOTATIONS):
        if w.get(keyword) != r[keyword]:
            report.add(path, f"keyword {keyword!r} {json.dumps(r[keyword])} cannot be compared: assumed breaking")


def _strings(report: _Report, w: JsonSchema, r: JsonSchema, path: str) -> None:
    for keyword in ("pattern", "format"):
        wanted = r.get(keyword)
        if wanted is None or (keyword == "format" and wanted in nodes.FREE_FORMATS) or w.get(keyword) == wanted:
            continue
        if w.get(keyword) is None:
            report.change(path, keyword, "null", json.dumps(wanted))
        else:
            old, new = (wanted, w[keyword]) if report.writer_is_new else (w[keyword], wanted)
            report.add(path, f"{keyword} {json.dumps(old)} -> {json.dumps(new)} (changed)")


def _lengths(report: _Report, w: JsonSchema, r: JsonSchema, path: str) -> None:
    pairs = [(keyword, lower) for low, high in nodes.LENGTHS for keyword, lower in ((low, True), (high, False))]
    for keyword, lower in pairs:
        if keyword not in r:
            continue
        limit, sent = r[keyword], w.get(keyword)
        if keyword == "maxLength" and r.get("format") == "binary" and w.get("format") != "binary":
            sent = None  # bytes count UTF-8 bytes, a str counts characters: "é" is 1 and 2
        if sent is None or (sent < limit if lower else sent > limit):
            report.change(path, keyword, "none" if sent is None else json.dumps(sent), json.dumps(limit))


def _bounds(report: _Report, w: JsonSchema, r: JsonSchema, path: str, *, integers: bool) -> None:
    for lower in (True, False):
        needed = bounds.bound(r, lower, integers=False)
        if needed is None:
            continue
        sent = bounds.bound(w, lower, integers=integers)
        if sent is None or not bounds.within(sent, needed, lower):
            report.bound_change(path, lower, sent, needed)
    step = r.get("multipleOf")
    if step is not None and not bounds.divides(bounds.fraction(step), w.get("multipleOf"), integers=integers):
        report.change(path, "multipleOf", json.dumps(w.get("multipleOf")), json.dumps(step))


def _decimal(report: _Report, w: JsonSchema, r: JsonSchema, path: str) -> None:
    """A reader Decimal: digits, places and bounds as pydantic checks them, on any JSON form."""
    need = bounds.decimal_limits(r)
    if "x-decimal" in w:
        have = bounds.decimal_limits(w)
    elif nodes.types(w) <= {"integer"}:
        have = bounds.integer_limits(w)
    elif nodes.types(w) <= NUMERIC and not need.keys() & {"max_digits", "decimal_places", "multiple_of"}:
        have = {"ge": bounds.bound(w, True, integers=False), "le": bounds.bound(w, False, integers=False)}
    else:
        sent_types = nodes.show_types(nodes.types(w))
        report.add(path, f"sends {sent_types} where a Decimal is read: not every such value is one")
        return
    for name, wanted in need.items():
        sent = have.get(name)
        if name in ("ge", "le"):
            lower = name == "ge"
            if sent is None or not bounds.within(sent, wanted, lower):
                report.bound_change(path, lower, sent, wanted)
        elif name == "multiple_of":
            if sent is None or (sent / wanted).denominator != 1:
                report.change(path, name, "none" if sent is None else str(sent), str(wanted))
        elif sent is None or sent > wanted:
            report.change(path, name, "none" if sent is None else str(sent), str(wanted))


def _decimal_as_number(report: _Report, w: JsonSchema, r: JsonSchema, path: str) -> None:
    have = bounds.decimal_limits(w)
    for lower in (True, False):
        needed, sent = bounds.bound(r, lower, integers=False), have.get("ge" if lower else "le")
        if needed is not None and (sent is None or not bounds.within(sent, needed, lower)):
            report.bound_change(path, lower, sent, needed)
    if "multipleOf" in r:
        report.change(path, "multipleOf", "null", json.dumps(r["multipleOf"]))


# -- the walk: resolves references, unions, objects and arrays ------------------------------


@dataclass
class _Walk:
    """Walks a writer schema and a reader schema side by side."""

    w_root: JsonSchema
    r_root: JsonSchema
    report: _Report

    def node(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        """Record what `w` may hold that `r` rejects; `seen`: $ref pairs being compared (recursion)."""
        refs = (str(w.get("$ref", "")), str(r.get("$ref", "")))
        if all(refs):
            if refs in seen:
                return  # a recursive model: this pair is already being compared further up
            seen = seen | {refs}
        w, r = nodes.resolve(w, self.w_root), nodes.resolve(r, self.r_root)
        if not nodes.restricts(r):
            return
        if w_members := nodes.members(w):
            self.writer_union(w_members, r, path, seen)
            return
        if (values := nodes.values(w)) is not None:
            if rejected := [value for value in values if not nodes.accepts(value, r, self.r_root)]:
                self.report.values(rejected, path)
            return
        if "x-decimal" in r:
            _decimal(self.report, w, r, path)
            return
        if r_members := nodes.members(r):
            self.union(w, r_members, path, seen)
            return
        self.single(w, r, path, seen)

    def writer_union(
        self, members: Sequence[JsonSchema], r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """Each member must fit: the types no reader member takes are reported once, for the union."""
        resolved = [nodes.resolve(member, self.w_root) for member in members]
        accepted = nodes.all_types(r, self.r_root)
        self.report.types(frozenset().union(*(nodes.all_types(m, self.w_root) for m in resolved)), accepted, path)
        for member in resolved:
            if nodes.all_types(member, self.w_root) <= accepted:
                self.node(member, r, path, seen)

    def single(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        w_types, r_types = nodes.types(w), nodes.types(r)
        if "x-decimal" in w and "number" in r_types:
            _decimal_as_number(self.report, w, r, path)  # pydantic reads a float from a numeric string
            return
        if not self.report.types(w_types, r_types, path):
            return
        if (allowed := nodes.values(r)) is not None:
            shown = json.dumps(sorted(allowed, key=nodes.sort_key))
            self.report.change(path, "allowed values", "any", shown)
            return
        _unknown_keywords(self.report, w, r, path)
        common = w_types & r_types
        if "string" in common:
            _strings(self.report, w, r, path)
        if common & NUMERIC:
            _bounds(self.report, w, r, path, integers=not {"number"} & w_types)
        if "object" in common:
            self.object(w, r, path, seen)
        if "array" in common:
            self.array(w, r, path, seen)
        _lengths(self.report, w, r, path)

    def union(
        self, w: JsonSchema, r_members: Sequence[JsonSchema], path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """A writer value must fit one reader member: the closest one's findings are reported."""
        if not self.report.types(nodes.types(w), nodes.all_types({"anyOf": r_members}, self.r_root), path):
            return
        best: list[Finding] | None = None
        for member in r_members:
            if not nodes.types(w) & nodes.all_types(member, self.r_root):
                continue
            walk = _Walk(self.w_root, self.r_root, _Report(self.report.writer_is_new))
            walk.node(w, member, path, seen)
            if not walk.report.found:
                return
            if best is None or len(walk.report.found) < len(best):
                best = walk.report.found
        self.report.found.extend(best or [])

    def object(self, w: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]) -> None:
        w_fields, r_fields = w.get("properties", {}), r.get("properties", {})
        always = set(w.get("required", ()))
        for name in r.get("required", ()):
            if name not in always:
                where = nodes.join(path, name)
                if self.report.writer_is_new:
                    gone = "field removed" if name not in w_fields else "field no longer always sent"
                    self.report.add(where, f"{gone}, but the old schema requires it")
                else:
                    self.report.add(where, "new required field" if name not in w_fields else "field became required")
        for name, sent in w_fields.items():
            target = r_fields[name] if name in r_fields else nodes.extra_value(r, name)
            if target is None:
                self.report.add(nodes.join(path, name), self.report.forbidden(f"field {name!r}"))
            else:
                self.node(sent, target, nodes.join(path, name), seen)
        for key_schema, value_schema in nodes.entries(w):
            self.check_entries(key_schema, value_schema, r, path, seen)

    def check_entries(
        self, key: JsonSchema, value: JsonSchema, r: JsonSchema, path: str, seen: frozenset[tuple[str, str]]
    ) -> None:
        """Keys the writer sends beyond its declared fields (a dict, extra='allow')."""
        where = nodes.join(path, "*")
        if "properties" in r and "additionalProperties" not in r and "patternProperties" not in r:
            return  # a model ignoring unknown fields
        for pattern, target in r.get("patternProperties", {}).items():
            if key.get("pattern") == pattern:
                self.node(value, target, where, seen)
                return
        extra = r.get("additionalProperties", "patternProperties" not in r)
        if extra is False:
            self.report.add(where, self.report.forbidden("keys other than the declared fields"))
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

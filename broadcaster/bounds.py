"""Numeric bounds compared exactly: integers as integers, floats as their binary value, Decimals' digits.

pydantic checks ``le=2**63-1`` on an int as an int; comparing bounds as floats would
call ``2**63-100`` the same. Everything here works on `Fraction`s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from broadcaster.exceptions import ContractError

__all__ = ["Bound", "bound", "decimal_limits", "divides", "fraction", "integer_limits", "show_bound", "within"]

JsonSchema = Mapping[str, Any]

Bound = tuple[Fraction, bool]  # (value, exclusive)


def fraction(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ContractError(f"a bound must be a number, not {json.dumps(value, default=str)}")
    return Fraction(value)


def bound(node: JsonSchema, lower: bool, *, integers: bool) -> Bound | None:
    """The tighter of a node's inclusive and exclusive bound on one side, exactly."""
    inclusive, exclusive = ("minimum", "exclusiveMinimum") if lower else ("maximum", "exclusiveMaximum")
    bounds = [(fraction(node[inclusive]), False)] if inclusive in node else []
    if exclusive in node and not isinstance(node[exclusive], bool):
        bounds.append((fraction(node[exclusive]), True))
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


def within(sent: Bound, needed: Bound, lower: bool) -> bool:
    """Whether every value within the writer's bound is within the reader's."""
    (have, have_strict), (want, want_strict) = sent, needed
    if have == want:
        return have_strict or not want_strict
    return have > want if lower else have < want


def show_bound(bound: Bound | None, lower: bool) -> str:
    if bound is None:
        return "none"
    value, strict = bound
    number = str(value.numerator) if value.denominator == 1 else str(float(value))
    return f"{('>' if lower else '<') + ('' if strict else '=')} {number}"


def divides(step: Fraction, sent: object, *, integers: bool) -> bool:
    if sent is not None:
        return (fraction(sent) / step).denominator == 1
    return integers and step.numerator == 1  # every integer is a multiple of 1/n


def decimal_limits(node: JsonSchema) -> dict[str, Any]:
    """A Decimal's limits: bounds as Bounds, digits and places as ints, whole digits derived."""
    raw = node.get("x-decimal", {})
    limits: dict[str, Any] = {}
    for key, lower, strict in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
        if key in raw:
            limits["ge" if lower else "le"] = (fraction(raw[key]), strict)
    for key in ("max_digits", "decimal_places"):
        if key in raw:
            limits[key] = int(raw[key])
    if "multiple_of" in raw:
        limits["multiple_of"] = fraction(raw["multiple_of"])
    if "max_digits" in raw:
        limits["whole_digits"] = int(raw["max_digits"]) - int(raw.get("decimal_places", 0))
    return limits


def integer_limits(node: JsonSchema) -> dict[str, Any]:
    """An integer writer's limits in a Decimal reader's terms."""
    limits: dict[str, Any] = {"decimal_places": 0}
    low, high = bound(node, True, integers=True), bound(node, False, integers=True)
    if low is not None:
        limits["ge"] = low
    if high is not None:
        limits["le"] = high
    if low is not None and high is not None:
        digits = max(len(str(abs(low[0].numerator))), len(str(abs(high[0].numerator))))
        limits["max_digits"] = limits["whole_digits"] = digits
    return limits


# -- one value against a reader schema --------------------------------------------------

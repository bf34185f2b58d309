"""The compatibility check against the truth: what the real producer sends, the real consumer reads.

Each pair of schemas is checked as a published event (new producer -> consumer on the
old schema) and as a consumed event (producer on the old schema -> new consumer). The
expected verdict is not written in the table: it is derived by sending sample values
through `Broadcast.message` (the producer's validate and serialize) and `deliver` (the
daemon's dispatch). The check may be over-strict (they are counted), never wrongly
"compatible".
"""

from __future__ import annotations

import enum
import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from django.dispatch import Signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints, create_model

import broadcaster
from broadcaster import compat, registry
from broadcaster.dispatch import Action
from broadcaster.exceptions import InvalidPayload
from broadcaster.snapshot import EventContract, schema_document
from broadcaster.testing import deliver

Ann = Any


class Two(enum.Enum):
    A = "a"
    B = "b"


class Three(enum.Enum):
    A = "a"
    B = "b"
    C = "c"


def leaf(w: Ann) -> type[BaseModel]:
    return create_model("Leaf", w=(w, ...), k=(Literal["a", "b"], "a"))


def deep(w: Ann, k: Ann = Literal["a", "b"]) -> Ann:
    """A field two models deep: v.mid.leaf.w (and .k)."""
    inner = create_model("Leaf", w=(w, ...), k=(k, "a"))
    return create_model("Mid", leaf=(inner, ...))


class KindA(BaseModel):
    kind: Literal["a"]
    x: int


class KindB(BaseModel):
    kind: Literal["b"]
    y: str


def s(**constraints: Any) -> Ann:
    return Annotated[str, StringConstraints(**constraints)]


def i(**constraints: Any) -> Ann:
    return Annotated[int, Field(**constraints)]


def d(**constraints: Any) -> Ann:
    return Annotated[Decimal, Field(**constraints)]


AS_FLOAT = PlainSerializer(float, return_type=float)
FORBID = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Pair:
    """Old and new field `v` (and optionally `w`, a config) of one event's schema."""

    name: str
    old: Ann
    new: Ann
    old_w: Any = None  # (annotation, default) of a second field, or None for none
    new_w: Any = None
    old_config: ConfigDict | None = None
    new_config: ConfigDict | None = None

    def model(self, side: str) -> type[BaseModel]:
        fields: dict[str, Any] = {"v": (getattr(self, side), ...)}
        if (w := getattr(self, f"{side}_w")) is not None:
            fields["w"] = w
        return create_model(side.title(), __config__=getattr(self, f"{side}_config"), **fields)


S10, S100 = s(max_length=10), s(max_length=100)
PAIRS = [
    # strings
    Pair("max_length raised", S10, S100),
    Pair("max_length lowered", S100, S10),
    Pair("min_length dropped", s(min_length=1), str),
    Pair("min_length added", str, s(min_length=1)),
    Pair("pattern dropped", s(pattern="^[A-Z]+$"), str),
    Pair("pattern added", str, s(pattern="^[A-Z]+$")),
    Pair("pattern changed", s(pattern="^[A-Z]+$"), s(pattern="^[A-Z]*$")),
    Pair("uuid to str", uuid.UUID, str),
    Pair("str to uuid", str, uuid.UUID),
    Pair("datetime to str", datetime, str),
    Pair("date to datetime", date, datetime),
    Pair("str unchanged", str, str),
    Pair("str to bytes of the same length", s(max_length=3), Annotated[bytes, Field(max_length=3)]),
    Pair("datetime bound added", datetime, Annotated[datetime, Field(gt=datetime(2020, 1, 1, tzinfo=UTC))]),
    Pair("datetime made aware", datetime, AwareDatetime),
    Pair("duration bound added", timedelta, Annotated[timedelta, Field(le=timedelta(seconds=5))]),
    # integers and floats, bounds exact
    Pair("le raised", i(le=100), i(le=1000)),
    Pair("le lowered", i(le=1000), i(le=100)),
    Pair("lt to le", i(lt=100), i(le=100)),
    Pair("le to lt", i(le=100), i(lt=100)),
    Pair("le 99 to lt 100", i(le=99), i(lt=100)),
    Pair("le 2**63-1 to 2**63-100", i(le=2**63 - 1), i(le=2**63 - 100)),
    Pair("le 2**63-100 to 2**63-1", i(le=2**63 - 100), i(le=2**63 - 1)),
    Pair("ge dropped", i(ge=0), int),
    Pair("gt added", int, i(gt=0)),
    Pair("int to float", int, float),
    Pair("float to int", float, int),
    Pair("multiple_of 2 to 4", i(multiple_of=2), i(multiple_of=4)),
    Pair("multiple_of 4 to 2", i(multiple_of=4), i(multiple_of=2)),
    Pair("float ge to gt", Annotated[float, Field(ge=0.5)], Annotated[float, Field(gt=0.5)]),
    Pair("int to optional", int, Optional[int]),  # noqa: UP045 - as users write it
    Pair("optional to int", int | None, int),
    Pair("int to str", int, str),
    Pair("bool to int", bool, int),
    # decimals: digits and places pydantic checks, which JSON Schema does not show
    Pair("decimal 5.2 to 6.1", d(max_digits=5, decimal_places=2), d(max_digits=6, decimal_places=1)),
    Pair("decimal 5.2 to 6.2", d(max_digits=5, decimal_places=2), d(max_digits=6, decimal_places=2)),
    Pair("decimal 6.2 to 5.2", d(max_digits=6, decimal_places=2), d(max_digits=5, decimal_places=2)),
    Pair("decimal digits added", Decimal, d(max_digits=5)),
    Pair("decimal digits dropped", d(max_digits=5), Decimal),
    Pair("int to decimal", int, Decimal),
    Pair("decimal to float", Decimal, float),
    Pair("decimal ge dropped", d(ge=0), Decimal),
    Pair("decimal places raised", d(decimal_places=2), d(decimal_places=3)),
    Pair("float to 4 digits", float, d(max_digits=4)),
    Pair("decimal sent as float", Annotated[Decimal, AS_FLOAT], Annotated[Decimal, AS_FLOAT]),
    Pair("decimal as float to 3 places", Annotated[Decimal, AS_FLOAT], Annotated[d(decimal_places=3), AS_FLOAT]),
    # literals and enums
    Pair("literal value added", Literal["a", "b"], Literal["a", "b", "c"]),
    Pair("literal value removed", Literal["a", "b", "c"], Literal["a", "b"]),
    Pair("literal to str", Literal["a", "b"], str),
    Pair("str to literal", str, Literal["a", "b"]),
    Pair("enum member added", Two, Three),
    Pair("enum member removed", Three, Two),
    Pair("int literal to int", Literal[1, 2], int),
    Pair("literal to optional literal", Literal["a"], Literal["a"] | None),
    Pair("literal into max_length", Literal["a", "abcd"], s(max_length=3)),
    # unions
    Pair("union member dropped", int | str, int),
    Pair("union member added", int, int | str),
    Pair("union member relaxed", Union[int, s(max_length=3)], Union[int, S10]),  # noqa: UP007
    Pair("union member tightened", Union[int, S10], Union[int, s(max_length=3)]),  # noqa: UP007
    Pair("model union narrowed", KindA | KindB, KindA),
    Pair("model union widened", KindA, KindA | KindB),
    # collections
    Pair("list items retyped", list[int], list[str]),
    Pair("list max raised", Annotated[list[int], Field(max_length=3)], Annotated[list[int], Field(max_length=10)]),
    Pair("list min added", list[int], Annotated[list[int], Field(min_length=1)]),
    Pair("dict values retyped", dict[str, int], dict[str, str]),
    Pair("dict values widened", dict[str, int], dict[str, int | str]),
    Pair("dict keys read as ints", dict[str, int], dict[int, int]),
    Pair("dict key pattern added", dict[str, int], dict[s(pattern="^a"), int]),
    Pair("dict key pattern dropped", dict[s(pattern="^a"), int], dict[str, int]),
    Pair("dict key length dropped", dict[s(max_length=3), int], dict[str, int]),
    Pair("dict key length added", dict[str, int], dict[s(max_length=3), int]),
    Pair("tuple grew", tuple[int, str], tuple[int, str, int]),
    Pair("tuple to list", tuple[int, int], list[int]),
    Pair("set to list", set[int], list[int]),
    # nested models, two levels deep
    Pair("deep max_length raised", deep(S10), deep(S100)),
    Pair("deep max_length lowered", deep(S100), deep(S10)),
    Pair("deep literal value added", deep(str), deep(str, Literal["a", "b", "c"])),
    Pair("deep literal value removed", deep(str, Literal["a", "b", "c"]), deep(str)),
    # the model itself
    Pair("forbid: optional field added", int, int, None, (int, 0), FORBID, FORBID),
    Pair("forbid: optional field dropped", int, int, (int, 0), None, FORBID, FORBID),
    Pair("optional field added", int, int, None, (int, 0)),
    Pair("required field added", int, int, None, (int, ...)),
    Pair("required field dropped", int, int, (int, ...), None),
    Pair("field made optional", int, int, (int, ...), (int | None, None)),
    Pair("field made required", int, int, (int, 0), (int, ...)),
    Pair("allow to forbid", int, int, None, None, ConfigDict(extra="allow"), FORBID),
]

UUID = "9b2c6f3e-7a51-4c1e-9a77-0d4b7f1c2e3a"
VALUES: list[Any] = [
    *(0, 1, -1, 2, 3, 4, 6, 99, 100, 101, 1000, 2**63 - 50, 2**63 - 1),
    *(0.5, 1.5, 0.75, 1e20, True, False, None),
    *(
        "",
        "a",
        "b",
        "c",
        "\u00e9\u00e9",
        "ABC",
        "abc",
        "abcd",
        "A" * 11,
        "x" * 101,
        UUID,
        "2026-01-02",
        "2026-01-02T03:04:05Z",
    ),
    *("2019-01-01T00:00:00Z", "2026-01-02T03:04:05", "PT10S", "PT1S"),
    *(
        Decimal("123.45"),
        Decimal("1234.5"),
        Decimal("1.234"),
        Decimal("12345"),
        Decimal("-1"),
        Decimal("0.001"),
        Decimal("0.0001"),
    ),
    *([], [1], [1, 2, 3, 4], ["a"], [1, 1], {}, {"a": 1}, {"abcd": 1}, {"b": 1}, {"a": "x"}),
    *((1, "a"), (1, "a", 2), (1, 2), {"kind": "a", "x": 1}, {"kind": "b", "y": "s"}),
    *({"leaf": {"w": w, "k": k}} for w in ("a", "A" * 11, "x" * 101) for k in ("a", "c")),
]
SAMPLES: list[dict[str, Any]] = [{"v": value} for value in VALUES] + [
    {"v": 1, "w": w} for w in (0, 5, None, "s", {"x": 1})
]


def round_trip_fails(writer: type[BaseModel], reader: type[BaseModel], samples: list[dict[str, Any]]) -> bool:
    """Whether some sample the producer sends with `writer` is rejected by a consumer of `reader`."""
    event = f"table.e{uuid.uuid4().hex[:12]}"
    broadcaster.broadcast(Signal(), event=event, schema=writer)
    broadcaster.subscribe(event, schema=reader)
    [producer] = [item for item in registry.broadcasts() if item.event == event]
    for kwargs in samples:
        try:
            message = producer.message(None, dict(kwargs), cause=None)
        except InvalidPayload:
            continue  # the producer never sends this
        outcome = deliver(event, message.body, envelope=message.envelope, raise_errors=False)
        if outcome.action is Action.DEAD_LETTER:
            assert outcome.reason == "schema-violation", outcome
            return True
    return False


def check_says_breaking(old: type[BaseModel], new: type[BaseModel], role: str) -> bool:
    """The command's verdict for this change, through snapshot documents as `check` reads them."""
    roles = {"published": role == "published", "consumed": role == "consumed"}
    before = schema_document(EventContract("table.event", old, "1.0", **roles))
    after = schema_document(EventContract("table.event", new, "1.0", **roles))
    changes = compat.compare({"table.event": before}, {"table.event": after})
    return any(change.breaking and not change.allowed for change in changes)


def verdicts(old: type[BaseModel], new: type[BaseModel], samples: list[dict[str, Any]]) -> dict[str, tuple[bool, bool]]:
    """role -> (the check says breaking, a round trip fails)."""
    return {
        "published": (check_says_breaking(old, new, "published"), round_trip_fails(new, old, samples)),
        "consumed": (check_says_breaking(old, new, "consumed"), round_trip_fails(old, new, samples)),
    }


def test_the_table_covers_at_least_60_pairs_of_every_class() -> None:
    assert len(PAIRS) >= 60
    assert len({pair.name for pair in PAIRS}) == len(PAIRS)


def test_the_check_is_never_wrongly_compatible_on_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    wrong, over_strict, breaking = [], [], 0
    for pair, (role, (says, fails)) in (
        (one, item) for one in PAIRS for item in verdicts(one.model("old"), one.model("new"), SAMPLES).items()
    ):
        breaking += fails
        if fails and not says:
            wrong.append(f"{pair.name} ({role})")
        if says and not fails:
            over_strict.append(f"{pair.name} ({role})")
    with capsys.disabled():
        print(f"\n{len(PAIRS) * 2} verdicts, {breaking} breaking by round trip, over-strict: {over_strict}")
    assert wrong == []
    # Both kinds are present, so the table tests something in each direction.
    assert 30 <= breaking <= len(PAIRS) * 2 - 30
    assert len(over_strict) <= 4  # see docs/versioning.md: each is a case the check cannot prove


@pytest.mark.parametrize(
    ("pair", "role"),
    [
        ("max_length raised", "published"),
        ("max_length lowered", "consumed"),
        ("le 2**63-1 to 2**63-100", "consumed"),
        ("lt to le", "published"),
        ("pattern dropped", "published"),
        ("uuid to str", "published"),
        ("literal value added", "published"),
        ("literal to str", "published"),
        ("union member relaxed", "published"),
        ("deep max_length raised", "published"),
        ("forbid: optional field added", "published"),
        ("dict values retyped", "published"),
        ("decimal 5.2 to 6.1", "consumed"),
        ("dict key pattern added", "consumed"),
    ],
)
def test_the_classes_the_issue_names_are_caught(pair: str, role: str) -> None:
    [found] = [item for item in PAIRS if item.name == pair]
    says, fails = verdicts(found.model("old"), found.model("new"), SAMPLES)[role]
    assert (says, fails) == (True, True)


# --- drawn pairs -----------------------------------------------------------------------

BOUNDS = st.none() | st.integers(-3, 3) | st.sampled_from([99, 100, 2**63 - 100, 2**63 - 1])


@st.composite
def integer_types(draw: st.DrawFn) -> Ann:
    constraints = {key: draw(BOUNDS) for key in draw(st.sets(st.sampled_from(["ge", "gt", "le", "lt"]), max_size=2))}
    return Annotated[int, Field(**{k: v for k, v in constraints.items() if v is not None})]


@st.composite
def string_types(draw: st.DrawFn) -> Ann:
    constraints = {
        "max_length": draw(st.none() | st.integers(0, 5)),
        "min_length": draw(st.none() | st.integers(0, 3)),
        "pattern": draw(st.none() | st.sampled_from(["^[a-c]+$", "^[A-C]*$", "b"])),
    }
    return Annotated[str, StringConstraints(**{k: v for k, v in constraints.items() if v is not None})]


@st.composite
def decimal_types(draw: st.DrawFn) -> Ann:
    digits, places = draw(st.none() | st.integers(1, 6)), draw(st.none() | st.integers(0, 3))
    if digits is not None and places is not None and places > digits:
        places = digits
    return Annotated[Decimal, Field(max_digits=digits, decimal_places=places)]


LITERALS = st.sets(st.sampled_from(["a", "b", "c", "abcd", 1, 2]), min_size=1).map(
    lambda values: Literal[tuple(sorted(values, key=str))]  # type: ignore[misc]
)
SCALARS = st.one_of(
    integer_types(),
    string_types(),
    decimal_types(),
    LITERALS,
    st.sampled_from([int, float, str, bool, Decimal, uuid.UUID, datetime, date, Two, Three]),
)
TYPES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        inner.map(lambda a: Optional[a]),  # noqa: UP045
        st.tuples(inner, inner).map(lambda ab: Union[ab]),  # noqa: UP007
        inner.map(lambda a: list[a]),  # type: ignore[valid-type]
        inner.map(lambda a: dict[str, a]),  # type: ignore[valid-type]
        inner.map(lambda a: create_model("Nested", x=(a, ...))),
    ),
    max_leaves=3,
)
SCALAR_VALUES = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([99, 100, 101, 2**63 - 99, 2**63 - 1, 2**63]),
    st.text(alphabet="abcABC", max_size=6),
    st.sampled_from([UUID, "2026-01-02", "2026-01-02T03:04:05Z"]),
    st.none(),
    st.booleans(),
    st.decimals(min_value=-(10**4), max_value=10**4, places=3),
    st.floats(-100, 100, allow_nan=False),
)
VALUES_ST = st.recursive(
    SCALAR_VALUES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "ab", "x"]), inner, max_size=2),
    ),
    max_leaves=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=TYPES, new=TYPES, forbid=st.booleans(), values=st.lists(VALUES_ST, min_size=1, max_size=12))
def test_a_drawn_pair_is_never_wrongly_compatible(old: Ann, new: Ann, forbid: bool, values: list[Any]) -> None:
    config = FORBID if forbid else None
    old_model = create_model("Old", __config__=config, v=(old, ...))
    new_model = create_model("New", __config__=config, v=(new, ...))
    samples = [{"v": value} for value in values]
    with registry.isolated():
        for role, (says, fails) in verdicts(old_model, new_model, samples).items():
            assert says or not fails, f"{role}: the check says compatible, but a sample is rejected"


def test_every_table_model_is_accepted_by_registration() -> None:
    # The table only holds schemas whose own form travels: otherwise its verdicts mean nothing.
    for pair, side in itertools.product(PAIRS, ("old", "new")):
        broadcaster.subscribe(f"table.reg{abs(hash((pair.name, side)))}", schema=pair.model(side))

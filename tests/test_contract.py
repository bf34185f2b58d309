"""`broadcaster_contract`: the AsyncAPI export and the breaking-change check against a snapshot."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import jsonschema
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.dispatch import Signal
from pydantic import BaseModel, Field

import broadcaster
from broadcaster import compat, snapshot
from broadcaster.snapshot import EventContract

REPO = Path(__file__).resolve().parents[1]
ASYNCAPI_SCHEMA = Path(__file__).resolve().parent / "fixtures" / "asyncapi-3.0.0-subset.schema.json"
SERVICES = ("orders", "inventory", "notifications")
EVENT = "shop.order_placed"


class Line(BaseModel):
    sku: str
    quantity: int


class Placed(BaseModel):
    """An order was placed."""

    order_id: int
    amount: float
    status: Literal["new", "paid", "shipped"]
    note: str
    lines: list[Line]


class Refunded(BaseModel):
    schema_version: ClassVar[str] = "1.2"

    order_id: int
    reason: str | None = None


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("broadcaster_contract", "export", *args, stdout=out)
    return out.getvalue()


def check(snapshot: Path) -> tuple[str, CommandError | None]:
    """Run `check`; return its output and the CommandError it raised, if any."""
    out = io.StringIO()
    try:
        call_command("broadcaster_contract", "check", "--snapshot", str(snapshot), stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def write_snapshot(directory: Path, *contracts: EventContract) -> Path:
    """A snapshot as `export --output` writes it, of schemas that are no longer registered."""
    directory.mkdir()
    for name, content in snapshot.export_files(contracts, {}).items():
        (directory / name).write_text(json.dumps(content), encoding="utf-8")
    return directory


def published(schema: type[BaseModel], event: str = EVENT) -> EventContract:
    return EventContract(event, schema, getattr(schema, "schema_version", "1.0"), published=True, consumed=False)


@pytest.fixture
def registered() -> None:
    broadcaster.broadcast(Signal(), event=EVENT, schema=Placed)
    broadcaster.subscribe("billing.order_refunded", schema=Refunded)


# --- export --------------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
def test_export_describes_each_broadcast_and_subscription() -> None:
    document = json.loads(export())

    assert document["asyncapi"] == "3.0.0"
    assert document["operations"][f"{EVENT}.send"]["action"] == "send"
    assert document["operations"]["billing.order_refunded.receive"]["action"] == "receive"
    exchange = document["channels"][EVENT]["bindings"]["amqp"]["exchange"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) == ("signals", "topic", True)
    assert document["channels"][EVENT]["address"] == EVENT
    assert document["channels"]["queue:tests"]["bindings"]["amqp"]["queue"]["name"] == "tests"
    sent = document["components"]["messages"][EVENT]
    assert sent["payload"] == {"$ref": "#/components/schemas/Placed"}
    assert sent["x-schema-version"] == "1.0"
    assert document["components"]["schemas"]["Placed"]["required"] == ["order_id", "amount", "status", "note", "lines"]
    assert document["components"]["schemas"]["Line"]["properties"]["quantity"]["type"] == "integer"
    received = document["components"]["messages"]["billing.order_refunded"]
    assert received["headers"]["allOf"][1]["properties"]["ce-schemaversion"] == {"const": "1.2"}


@pytest.mark.usefixtures("registered")
def test_export_is_a_valid_asyncapi_3_document() -> None:
    document = json.loads(export())

    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    # The schema cannot see whether references point anywhere; every one must.
    for ref in _refs(document):
        assert compat._pointer(document, ref), ref


@pytest.mark.usefixtures("registered")
def test_export_output_writes_a_schema_per_event_and_drops_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "gone.event.schema.json").write_text("{}")

    printed = export("--output", str(tmp_path))

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "asyncapi.json",
        "billing.order_refunded.schema.json",
        f"{EVENT}.schema.json",
    ]
    schema = json.loads((tmp_path / f"{EVENT}.schema.json").read_text())
    assert schema["x-broadcaster"] == {"event": EVENT, "schemaVersion": "1.0", "published": True, "consumed": False}
    assert schema["properties"]["lines"]["items"] == {"$ref": "#/$defs/Line"}
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "wrote 3 file(s) for 2 event(s)" in printed


def test_export_refuses_one_event_with_two_different_schemas() -> None:
    broadcaster.broadcast(Signal(), event=EVENT, schema=Placed)
    broadcaster.subscribe(EVENT, schema=Refunded)

    with pytest.raises(CommandError, match=r"published with Placed 1\.0 and consumed with Refunded 1\.2") as caught:
        export()
    assert caught.value.returncode == 2


# --- check ---------------------------------------------------------------------------


@pytest.mark.usefixtures("registered")
def test_check_passes_on_the_snapshot_export_wrote(tmp_path: Path) -> None:
    export("--output", str(tmp_path))

    output, error = check(tmp_path)

    assert error is None
    assert output.splitlines()[-1].startswith("broadcaster_contract: OK: 2 event(s), 0 change(s), 0 breaking")


class AddedOptional(Placed):
    coupon: str | None = None


def test_check_passes_on_an_added_optional_field(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    broadcaster.broadcast(Signal(), event=EVENT, schema=AddedOptional)

    output, error = check(snapshot)

    assert error is None
    assert f"compatible: {EVENT} coupon: new optional field" in output
    assert "0 breaking" in output.splitlines()[-1]


class RemovedField(BaseModel):
    order_id: int
    amount: float
    status: Literal["new", "paid", "shipped"]
    lines: list[Line]


class Retyped(Placed):
    order_id: str  # type: ignore[assignment]


class NewRequired(Placed):
    customer: str


class EnumNarrowed(Placed):
    status: Literal["new", "paid"]  # type: ignore[assignment]


class IntForNumber(Placed):
    amount: int  # type: ignore[assignment]


class MaxLength(Placed):
    note: str = Field(max_length=10)


class NestedConstraint(BaseModel):
    class Line(BaseModel):
        sku: str
        quantity: int = Field(gt=0)

    order_id: int
    amount: float
    status: Literal["new", "paid", "shipped"]
    note: str
    lines: list[Line]


class MadeOptional(Placed):
    order_id: int | None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("schema", "path", "what"),
    [
        (RemovedField, "note", "field removed"),
        (Retyped, "order_id", "type changed: integer -> string"),
        (NewRequired, "customer", "new required field"),
        (EnumNarrowed, "status", 'values removed: "shipped"'),
        (IntForNumber, "amount", "type narrowed: number -> integer"),
        (MaxLength, "note", "maxLength none -> <= 10 (narrowed)"),
        (NestedConstraint, "lines[].quantity", "minimum none -> > 0 (narrowed)"),
        (MadeOptional, "order_id", "type widened: integer -> integer | null"),
    ],
)
def test_check_fails_naming_each_breaking_change(tmp_path: Path, schema: type[BaseModel], path: str, what: str) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    broadcaster.broadcast(Signal(), event=EVENT, schema=schema)

    output, error = check(snapshot)

    assert error is not None
    assert error.returncode == 1
    assert f"BREAKING: {EVENT} {path}: {what}" in output.splitlines()
    assert output.splitlines()[-1].startswith("broadcaster_contract: FAILED: 1 event(s), 1 change(s), 1 breaking")
    assert str(error) == output.splitlines()[-1]


class NextMajor(RemovedField):
    schema_version: ClassVar[str] = "2.0"


def test_check_passes_a_breaking_change_when_the_major_version_went_up(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    broadcaster.broadcast(Signal(), event=EVENT, schema=NextMajor)

    output, error = check(snapshot)

    assert error is None
    assert f"breaking (allowed: major version went up): {EVENT} note: field removed" in output
    assert f"compatible: {EVENT} (payload): schema_version 1.0 -> 2.0" in output
    assert output.splitlines()[-1].endswith("0 breaking, 1 breaking but allowed by a major version bump")


def test_check_fails_when_a_published_event_is_gone_but_not_a_consumed_one(tmp_path: Path) -> None:
    consumed = EventContract("billing.order_refunded", Refunded, "1.2", published=False, consumed=True)
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed), consumed)

    output, error = check(snapshot)

    assert error is not None
    assert f"BREAKING: {EVENT} (payload): event removed: no longer published, its consumers get nothing" in output
    assert "compatible: billing.order_refunded (payload): event removed: no longer consumed" in output


def test_check_of_a_missing_snapshot_is_an_error_of_its_own(tmp_path: Path) -> None:
    _, error = check(tmp_path / "nowhere")

    assert error is not None
    assert error.returncode == 2
    assert "does not exist" in str(error)


# --- compare_schemas: the cases the command tests do not reach -----------------------


class Node(BaseModel):
    name: str
    children: list[Node] = []


class NodeWithSize(BaseModel):
    name: str
    children: list[NodeWithSize] = []
    size: int


class Money(BaseModel):
    amount: float = Field(ge=0)
    tags: dict[str, int] = {}


class MoneyRelaxed(BaseModel):
    amount: float = Field(gt=-1)
    tags: dict[str, int] = {}


class MoneyStrictTags(BaseModel):
    amount: float = Field(ge=0)
    tags: dict[str, str] = {}


def changes(old: type[BaseModel], new: type[BaseModel]) -> list[tuple[str, str, bool]]:
    return compat.compare_schemas(old.model_json_schema(), new.model_json_schema())


def test_recursive_models_are_compared_once_per_level() -> None:
    assert changes(Node, NodeWithSize) == [("size", "new required field", True)]


def test_relaxed_bounds_are_compatible_and_dict_values_are_compared() -> None:
    assert changes(Money, MoneyRelaxed) == [("amount", "minimum >= 0 -> > -1 (relaxed)", False)]
    assert changes(Money, MoneyStrictTags) == [("tags.*", "type changed: integer -> string", True)]


def test_identical_schemas_have_no_changes() -> None:
    assert changes(Placed, Placed) == []


# --- the example services ------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_example_service_matches_its_committed_contract(service: str, tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SERVICE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "broadcaster_contract", "check", "--snapshot", "contract"],
        cwd=REPO / "services" / service,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "broadcaster_contract: OK" in result.stdout


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []

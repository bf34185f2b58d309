"""`broadcaster_contract`: the AsyncAPI export and the breaking-change check against a snapshot."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.dispatch import Signal
from pydantic import BaseModel, Field, Json, PlainSerializer, field_validator

import broadcaster
from broadcaster import payload, schemacheck, schemanodes, snapshot
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


def consumed(schema: type[BaseModel], event: str = EVENT) -> EventContract:
    return EventContract(event, schema, getattr(schema, "schema_version", "1.0"), published=False, consumed=True)


def register(role: str, schema: type[BaseModel], **options: Any) -> None:
    if role == "published":
        broadcaster.broadcast(Signal(), event=EVENT, schema=schema)
    else:
        broadcaster.subscribe(EVENT, schema=schema, **options)


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
        assert schemanodes.pointer(document, ref), ref


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
    meta = schema["x-broadcaster"]
    assert {key: meta[key] for key in ("event", "schemaVersion", "published", "consumed", "snapshotFormat")} == {
        "event": EVENT,
        "schemaVersion": "1.0",
        "published": True,
        "consumed": False,
        "snapshotFormat": 2,
    }
    assert schema["properties"]["lines"]["items"] == {"$ref": "#/$defs/Line"}
    # What the producer sends: in serialization mode every field is always there.
    assert meta["serialization"]["required"] == ["order_id", "amount", "status", "note", "lines"]
    jsonschema.Draft202012Validator.check_schema(meta["serialization"])
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
    assert "0 breaking" in output.splitlines()[-1]
    assert "note: custom validators (@field_validator, @model_validator" in output


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


class Upper(Placed):
    note: str = Field(pattern="^[A-Z]+$")


@pytest.mark.parametrize(
    ("role", "old", "new", "path", "what"),
    [
        ("published", Placed, RemovedField, "note", "field removed, but the old schema requires it"),
        ("published", Placed, Retyped, "order_id", "type integer -> string (changed)"),
        ("published", Placed, MadeOptional, "order_id", "type integer -> integer | null (widened)"),
        (
            "published",
            EnumNarrowed,
            Placed,
            "status",
            'values added: ["shipped"], which the old schema rejects (widened)',
        ),
        ("published", IntForNumber, Placed, "amount", "type integer -> number (widened)"),
        ("published", MaxLength, Placed, "note", "maxLength 10 -> none (widened)"),
        ("published", Upper, Placed, "note", 'pattern "^[A-Z]+$" -> null (widened)'),
        ("published", NestedConstraint, Placed, "lines[].quantity", "minimum > 0 -> none (widened)"),
        ("consumed", Placed, NewRequired, "customer", "new required field"),
        (
            "consumed",
            Placed,
            EnumNarrowed,
            "status",
            'values removed: ["shipped"], which the old schema sends (narrowed)',
        ),
        ("consumed", Placed, IntForNumber, "amount", "type number -> integer (narrowed)"),
        ("consumed", Placed, MaxLength, "note", "maxLength none -> 10 (narrowed)"),
        ("consumed", Placed, Upper, "note", 'pattern null -> "^[A-Z]+$" (narrowed)'),
        ("consumed", Placed, NestedConstraint, "lines[].quantity", "minimum none -> > 0 (narrowed)"),
    ],
)
def test_check_fails_naming_each_breaking_change(  # noqa: PLR0917 - one parameter per column
    tmp_path: Path, role: str, old: type[BaseModel], new: type[BaseModel], path: str, what: str
) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(old) if role == "published" else consumed(old))
    register(role, new)

    output, error = check(snapshot)

    assert error is not None
    assert error.returncode == 1
    assert f"BREAKING: {EVENT} {path}: {what}" in output.splitlines()
    assert output.splitlines()[-1].startswith("broadcaster_contract: FAILED: 1 event(s), ")
    assert str(error) == output.splitlines()[-1]


@pytest.mark.parametrize(("role", "old", "new"), [("published", Placed, MaxLength), ("consumed", MaxLength, Placed)])
def test_the_other_direction_is_listed_as_compatible(tmp_path: Path, role: str, old: Any, new: Any) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(old) if role == "published" else consumed(old))
    register(role, new)

    output, error = check(snapshot)

    assert error is None
    kind = "narrowed" if role == "published" else "widened"
    assert (
        f"compatible: {EVENT} note: maxLength {'none -> 10' if role == 'published' else '10 -> none'} ({kind})"
        in output
    )


class NextMajor(RemovedField):
    schema_version: ClassVar[str] = "2.0"


def test_check_passes_a_breaking_change_when_the_major_version_went_up(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    broadcaster.broadcast(Signal(), event=EVENT, schema=NextMajor)

    output, error = check(snapshot)

    assert error is None
    assert (
        f"breaking (allowed: major version went up): {EVENT} note: field removed, but the old schema requires it"
        in (output)
    )
    assert (
        f"breaking (allowed: major version went up): {EVENT} (payload): schema_version 1.0 -> 2.0: consumers still "
        f"on major 1 dead-letter the new messages (unsupported-schema-version); every consumer of {EVENT} must "
        "first deploy a schema of major 2 with upcasters={1: ...} for messages still queued"
    ) in output
    assert output.splitlines()[-1].endswith("0 breaking, 2 breaking but allowed by a major version bump")


def test_a_consumed_major_bump_needs_an_upcaster_from_the_old_major(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", consumed(Placed))
    register("consumed", NextMajor)

    output, error = check(snapshot)

    assert error is not None
    assert error.returncode == 1
    assert (
        f"BREAKING: {EVENT} (payload): schema_version 1.0 -> 2.0 without an upcaster from major 1: every message a "
        "producer on major 1 sends is dead-lettered; subscribe with upcasters={1: ...}"
    ) in output


def test_a_consumed_major_bump_with_its_upcaster_passes(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", consumed(Placed))
    register("consumed", NextMajor, upcasters={1: lambda data: data})

    output, error = check(snapshot)

    assert error is None, output
    assert f"note: {EVENT} (payload): schema_version 1.0 -> 2.0: major 1 messages are read through upcasters" in output


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


# --- errors: exit 2, a clear message, never a traceback -------------------------------


def test_check_reads_a_snapshot_of_format_1_with_a_note(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    path = snapshot / f"{EVENT}.schema.json"
    document = json.loads(path.read_text())
    document["x-broadcaster"] = {
        key: document["x-broadcaster"][key] for key in ("event", "schemaVersion", "published", "consumed")
    }
    path.write_text(json.dumps(document))
    register("published", Placed)

    output, error = check(snapshot)

    assert error is None, output
    assert "keeps no serialization schema (format 1): run `export --output` again" in output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[]", "not a schema file written by `broadcaster_contract export`"),
        ('{"x-broadcaster": {"event": 1}}', "x-broadcaster.event must be a JSON string, not 1"),
        (
            '{"x-broadcaster": {"event": "e", "schemaVersion": "1", "published": true, "consumed": false}}',
            "'major.minor'",
        ),
        ('{"x-broadcaster": {"snapshotFormat": 9}}', "snapshotFormat 9 is not one this version reads"),
        (
            '{"x-broadcaster": {"event": "e", "schemaVersion": "1.0", "published": true, "consumed": false, '
            '"snapshotFormat": 2}}',
            "x-broadcaster.upcasters must be a JSON array, not null",
        ),
    ],
)
def test_a_malformed_snapshot_exits_2_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "e.schema.json").write_text(content)

    _, error = check(tmp_path)

    assert error is not None
    assert error.returncode == 2
    assert "e.schema.json" in str(error)
    assert message in str(error)


def test_a_snapshot_schema_that_cannot_be_compared_exits_2(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Placed))
    path = snapshot / f"{EVENT}.schema.json"
    document = json.loads(path.read_text())
    document["properties"]["amount"] = {"$ref": "#/$defs/Nowhere"}
    path.write_text(json.dumps(document))
    register("published", Placed)

    _, error = check(snapshot)

    assert error is not None
    assert error.returncode == 2
    assert "$ref '#/$defs/Nowhere' points at nothing" in str(error)


class Unwritable(BaseModel):
    callback: Callable[[], None]


def test_a_contract_that_cannot_be_built_exits_2(tmp_path: Path) -> None:
    register("published", Unwritable)

    for action in (["export"], ["check", "--snapshot", str(tmp_path)]):
        with pytest.raises(CommandError, match=r"schema Unwritable cannot be written as JSON Schema") as caught:
            call_command("broadcaster_contract", *action, stdout=io.StringIO())
        assert caught.value.returncode == 2


def test_the_command_as_a_process_exits_2_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "e.schema.json").write_text("{not json")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SERVICE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "broadcaster_contract", "check", "--snapshot", str(tmp_path)],
        cwd=REPO / "services" / "orders",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot be read as JSON" in result.stderr


class Checked(Placed):
    @field_validator("note")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        return value.strip()


def test_custom_validators_are_named_as_invisible(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", published(Checked))
    register("published", Checked)

    output, error = check(snapshot)

    assert error is None
    assert f"note: {EVENT} (payload): has custom validators (@field_validator" in output


# --- schemacheck: cases the command tests do not reach ---------------------------------


class Node(BaseModel):
    name: str
    children: list[Node] = []


class NodeWithSize(BaseModel):
    name: str
    children: list[NodeWithSize] = []
    size: int


def published_findings(old: type[BaseModel], new: type[BaseModel]) -> list[str]:
    sent, accepted = snapshot.json_schema(new, "serialization"), snapshot.json_schema(old, "validation")
    return [str(found) for found in schemacheck.findings(sent, accepted, writer_is_new=True)]


def consumed_findings(old: type[BaseModel], new: type[BaseModel]) -> list[str]:
    sent, accepted = snapshot.json_schema(old, "serialization"), snapshot.json_schema(new, "validation")
    return [str(found) for found in schemacheck.findings(sent, accepted, writer_is_new=False)]


def test_recursive_models_are_compared_once_per_level() -> None:
    assert consumed_findings(Node, NodeWithSize) == ["size: new required field"]
    assert published_findings(Node, NodeWithSize) == []


def test_identical_schemas_have_no_findings() -> None:
    assert published_findings(Placed, Placed) == consumed_findings(Placed, Placed) == []


def _numbered(value: int) -> str:
    return f"#{value}"


class Shouted(BaseModel):
    count: Annotated[int, PlainSerializer(_numbered, return_type=str)]


class Embedded(BaseModel):
    # Sent as the inner value (5), read as a JSON string ("5"): every message rejected.
    data: Json[int]


@pytest.mark.usefixtures("without_mysql")
def test_the_system_check_reports_a_serializer_its_validation_rejects() -> None:
    broadcaster.broadcast(Signal(), event="shop.shouted", schema=Shouted)
    broadcaster.subscribe("shop.embedded", schema=Embedded)
    broadcaster.subscribe("shop.placed", schema=Placed)

    errors = [error for error in run_checks() if error.id == "broadcaster.E010"]

    assert [error.msg for error in errors] == [
        "Embedded sends what its own validation rejects (read -> sent): data: type string -> integer (changed)",
        "Shouted sends what its own validation rejects (read -> sent): count: type integer -> string (changed)",
    ]
    # What the check prevents: the message each one sends, rejected by the same schema.
    for schema, sent in ((Shouted, Shouted(count=5)), (Embedded, Embedded(data="5"))):
        with pytest.raises(ValueError, match="validation error"):
            schema.model_validate_json(payload.dump(sent))


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

"""The contract snapshot: each event's JSON Schemas, written by `export` and read by `check`.

One file per event, ``<event>.schema.json``: at the top level the *validation-mode*
JSON Schema (what this service's schema accepts, usable by tools in any language), and
under ``x-broadcaster`` the metadata and the *serialization-mode* schema (what it
sends), both by alias, the wire form. `read_snapshot()` validates the format
(``snapshotFormat`` 2; format 1 files, which had no serialization schema, are read with
the validation schema standing in for it).

`collect()` reads the registry once; everything after it works on plain JSON documents,
so a committed snapshot and the live code compare the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.errors import PydanticUserError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from broadcaster.exceptions import ContractError
from broadcaster.payload import schema_major
from broadcaster.producer import Broadcast
from broadcaster.registry import Subscription

__all__ = [
    "ASYNCAPI_FILE",
    "META",
    "SCHEMA_SUFFIX",
    "SNAPSHOT_FORMAT",
    "EventContract",
    "Generator",
    "Meta",
    "collect",
    "export_files",
    "json_schema",
    "read_meta",
    "read_snapshot",
    "schema_document",
]

JsonSchema = Mapping[str, Any]

ASYNCAPI_FILE = "asyncapi.json"
SCHEMA_SUFFIX = ".schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
META = "x-broadcaster"  # our keyword in each schema file; JSON Schema tools ignore unknown keywords
SNAPSHOT_FORMAT = 2
_VERSION = re.compile(r"^\d+\.\d+$")


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

    def datetime_schema(self, schema: core_schema.DatetimeSchema) -> JsonSchemaValue:
        """A datetime, with its bounds and time-zone rule under ``x-constraints``."""
        return _with_constraints(super().datetime_schema(schema), schema)

    def date_schema(self, schema: core_schema.DateSchema) -> JsonSchemaValue:
        """A date, with its bounds under ``x-constraints``."""
        return _with_constraints(super().date_schema(schema), schema)

    def time_schema(self, schema: core_schema.TimeSchema) -> JsonSchemaValue:
        """A time, with its bounds and time-zone rule under ``x-constraints``."""
        return _with_constraints(super().time_schema(schema), schema)

    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> JsonSchemaValue:
        """A duration, with its bounds under ``x-constraints``."""
        return _with_constraints(super().timedelta_schema(schema), schema)

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        """A dict; keys read as another type than text (``dict[int, X]``) are noted in ``x-constraints``."""
        json_schema = super().dict_schema(schema)
        keys = schema.get("keys_schema", {}).get("type")
        if keys in (None, "str", "any"):
            return json_schema
        return {**json_schema, "x-constraints": {"keys": keys}}

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        """In serialization mode, every field the producer writes (all of them)."""
        if self.mode == "serialization":
            return field.get("serialization_exclude_if") is None
        return super().field_is_required(field, total)


_TEMPORAL = ("gt", "ge", "lt", "le", "tz_constraint", "now_op", "now_utc_offset", "microseconds_precision")


def _with_constraints(json_schema: JsonSchemaValue, schema: Mapping[str, Any]) -> JsonSchemaValue:
    """Add what pydantic checks on a date or time but JSON Schema cannot say.

    The check does not interpret ``x-constraints``: a reader's that the writer does not
    share exactly is reported as breaking.
    """
    constraints = {key: _exact(schema[key]) for key in _TEMPORAL if schema.get(key) not in (None, "truncate")}
    return {**json_schema, "x-constraints": constraints} if constraints else json_schema


def _exact(value: object) -> object:
    """A constraint as JSON without losing digits: ints as they are, Decimals as strings."""
    if isinstance(value, bool | int | float):
        return value
    return str(value)


def json_schema(schema: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    """The JSON Schema of `schema` by alias, as the check compares it; ContractError if it has none."""
    try:
        return schema.model_json_schema(mode=mode, by_alias=True, schema_generator=Generator)
    except PydanticUserError as exc:
        raise ContractError(
            f"schema {schema.__qualname__} cannot be written as JSON Schema ({mode} mode): {exc}"
        ) from exc


@dataclass(frozen=True)
class EventContract:
    """One event as this service sees it: its schema and whether it publishes or consumes it."""

    event: str
    schema: type[BaseModel]
    schema_version: str
    published: bool
    consumed: bool
    upcasters: frozenset[int] = frozenset()  # the older majors a subscription reads through upcasters

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """The validation-mode JSON Schema, by alias: what the schema class accepts."""
        return json_schema(self.schema, "validation")

    @cached_property
    def serialization_schema(self) -> dict[str, Any]:
        """The serialization-mode JSON Schema, by alias: what the producer sends."""
        return json_schema(self.schema, "serialization")

    @property
    def custom_validators(self) -> bool:
        """Whether the schema runs code of its own when it validates (invisible to any schema check)."""
        return _has_functions(self.schema.__pydantic_core_schema__)


def _has_functions(core: object) -> bool:
    if isinstance(core, dict):
        kind = core.get("type")
        if isinstance(kind, str) and kind.startswith("function-"):
            return True
        return any(_has_functions(value) for key, value in core.items() if key != "serialization")
    if isinstance(core, list | tuple):
        return any(_has_functions(item) for item in core)
    return False


@dataclass(frozen=True)
class Meta:
    """What a snapshot file says of its event, besides the validation schema."""

    event: str
    schema_version: str
    published: bool
    consumed: bool
    serialization: JsonSchema
    upcasters: frozenset[int] = frozenset()
    custom_validators: bool = False
    snapshot_format: int = SNAPSHOT_FORMAT

    @property
    def major(self) -> int:
        """The major of `schema_version`."""
        major = schema_major(self.schema_version)
        if major is None:
            raise ValueError(f"{self.event}: schema version {self.schema_version!r} has no major number")
        return major


def collect(broadcasts: Iterable[Broadcast], subscriptions: Iterable[Subscription]) -> list[EventContract]:
    """The contracts of the registered broadcasts and subscriptions, sorted by event.

    A service that publishes and consumes one event must use one JSON Schema for both:
    otherwise it would break its own contract.
    """
    published = {item.event: item for item in broadcasts}
    consumed = {item.event: item for item in subscriptions}
    contracts = []
    for event in sorted(published.keys() | consumed.keys()):
        source = published.get(event) or consumed[event]
        if event in published and event in consumed:
            _check_same_schema(published[event], consumed[event])
        upcasters = frozenset(consumed[event].upcasters) if event in consumed else frozenset()
        contracts.append(
            EventContract(event, source.schema, source.schema_version, event in published, event in consumed, upcasters)
        )
    return contracts


def _check_same_schema(sent: Broadcast, received: Subscription) -> None:
    if sent.schema_version != received.schema_version or (
        json_schema(sent.schema, "validation") != json_schema(received.schema, "validation")
    ):
        raise ContractError(
            f"event {sent.event!r} is published with {sent.schema.__qualname__} {sent.schema_version} "
            f"and consumed with {received.schema.__qualname__} {received.schema_version}; use one schema"
        )


def schema_document(contract: EventContract) -> dict[str, Any]:
    """The plain JSON Schema file of one event, with our metadata under `x-broadcaster`."""
    meta = {
        "event": contract.event,
        "schemaVersion": contract.schema_version,
        "published": contract.published,
        "consumed": contract.consumed,
        "upcasters": sorted(contract.upcasters),
        "customValidators": contract.custom_validators,
        "snapshotFormat": SNAPSHOT_FORMAT,
        "serialization": contract.serialization_schema,
    }
    return {"$schema": JSON_SCHEMA_DIALECT, **contract.json_schema, META: meta}


def export_files(contracts: Sequence[EventContract], asyncapi: JsonSchema) -> dict[str, dict[str, Any]]:
    """File name -> JSON content of a snapshot: the AsyncAPI document and one schema per event."""
    files = {ASYNCAPI_FILE: dict(asyncapi)}
    files.update({f"{c.event}{SCHEMA_SUFFIX}": schema_document(c) for c in contracts})
    return files


def read_snapshot(directory: Path) -> dict[str, dict[str, Any]]:
    """Event -> schema document of every ``*.schema.json`` in `directory`, each checked by `read_meta`."""
    if not directory.is_dir():
        raise ContractError(f"snapshot directory {str(directory)!r} does not exist")
    documents = {}
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ContractError(f"{path}: cannot be read as JSON: {exc}") from exc
        try:
            meta = read_meta(document)
        except ContractError as exc:
            raise ContractError(f"{path}: {exc}") from exc
        if meta.event in documents:
            raise ContractError(f"{path}: event {meta.event!r} is described by two files")
        documents[meta.event] = document
    return documents


def read_meta(document: object) -> Meta:
    """The metadata of one schema document, or ContractError saying what is wrong with it."""
    if not isinstance(document, dict) or not isinstance(document.get(META), dict):
        raise ContractError(f"not a schema file written by `broadcaster_contract export` (no {META!r} object)")
    meta = document[META]
    fmt = meta.get("snapshotFormat", 1)
    if fmt not in (1, SNAPSHOT_FORMAT):
        raise ContractError(f"snapshotFormat {json.dumps(fmt)} is not one this version reads (1 or {SNAPSHOT_FORMAT})")
    expected: dict[str, type | tuple[type, ...]] = {"event": str, "schemaVersion": str, "published": bool}
    expected |= {"consumed": bool, "upcasters": list, "customValidators": bool, "serialization": dict}
    for key, kind in expected.items():
        required = key in ("event", "schemaVersion", "published", "consumed") or fmt >= SNAPSHOT_FORMAT
        if (key in meta or required) and not isinstance(meta.get(key), kind):
            raise ContractError(f"{META}.{key} must be a JSON {_kind(kind)}, not {json.dumps(meta.get(key))}")
    if not _VERSION.match(meta["schemaVersion"]):
        raise ContractError(f"{META}.schemaVersion must be 'major.minor', not {json.dumps(meta['schemaVersion'])}")
    upcasters = meta.get("upcasters", [])
    if not all(isinstance(major, int) and not isinstance(major, bool) and major >= 0 for major in upcasters):
        raise ContractError(f"{META}.upcasters must list major versions, not {json.dumps(upcasters)}")
    # A format 1 file kept no serialization schema: the validation schema stands in for it.
    serialization = meta.get("serialization") or {k: v for k, v in document.items() if k != META}
    return Meta(
        meta["event"],
        meta["schemaVersion"],
        meta["published"],
        meta["consumed"],
        serialization,
        frozenset(upcasters),
        meta.get("customValidators", False),
        fmt,
    )


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", bool: "boolean", list: "array", dict: "object"}
    return names.get(kind, "value") if isinstance(kind, type) else "value"

"""The contract snapshot: each event's JSON Schema files, written by `export` and read by `check`.

`collect()` reads the registry once; everything after it works on plain JSON documents,
so a committed snapshot and the live code compare the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from broadcaster.exceptions import ContractError
from broadcaster.registry import Broadcast, Subscription

__all__ = [
    "ASYNCAPI_FILE",
    "META",
    "SCHEMA_SUFFIX",
    "EventContract",
    "collect",
    "export_files",
    "read_snapshot",
    "schema_document",
]

JsonSchema = Mapping[str, Any]

ASYNCAPI_FILE = "asyncapi.json"
SCHEMA_SUFFIX = ".schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
META = "x-broadcaster"  # our keyword in each schema file; JSON Schema tools ignore unknown keywords


@dataclass(frozen=True)
class EventContract:
    """One event as this service sees it: its schema and whether it publishes or consumes it."""

    event: str
    schema: type[BaseModel]
    schema_version: str
    published: bool
    consumed: bool

    @property
    def json_schema(self) -> dict[str, Any]:
        """The validation-mode JSON Schema: what the schema class accepts.

        It is the same for both sides, and what pydantic serializes always validates
        against it (a Decimal is written as a string, which the schema accepts).
        """
        return self.schema.model_json_schema(mode="validation", by_alias=True)


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
        contracts.append(
            EventContract(event, source.schema, source.schema_version, event in published, event in consumed)
        )
    return contracts


def _check_same_schema(sent: Broadcast, received: Subscription) -> None:
    if sent.schema_version != received.schema_version or (
        sent.schema.model_json_schema() != received.schema.model_json_schema()
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
    }
    return {"$schema": JSON_SCHEMA_DIALECT, **contract.json_schema, META: meta}


def export_files(contracts: Sequence[EventContract], asyncapi: JsonSchema) -> dict[str, dict[str, Any]]:
    """File name -> JSON content of a snapshot: the AsyncAPI document and one schema per event."""
    files = {ASYNCAPI_FILE: dict(asyncapi)}
    files.update({f"{c.event}{SCHEMA_SUFFIX}": schema_document(c) for c in contracts})
    return files


def read_snapshot(directory: Path) -> dict[str, dict[str, Any]]:
    """Event -> schema document of every ``*.schema.json`` in `directory`."""
    if not directory.is_dir():
        raise ContractError(f"snapshot directory {str(directory)!r} does not exist")
    documents = {}
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            event = document[META]["event"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{path}: not a schema file written by `broadcaster_contract export`") from exc
        documents[str(event)] = document
    return documents

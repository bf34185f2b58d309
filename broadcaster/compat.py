"""Whether a service's new contract breaks an event's producers or consumers, by direction.

- A **published** event is compatible when everything the new producer can send is
  accepted by consumers still on the old schema: the new *serialization* schema against
  the snapshot's *validation* schema. Widening it breaks (a larger ``max_length``, a new
  ``Literal`` value, ``int`` to ``int | None``, dropping a pattern, a new field where
  the old schema has ``extra="forbid"``); narrowing it does not.
- A **consumed** event is compatible when everything a producer on the old schema sent
  is accepted by the new consumer: the snapshot's serialization schema against the new
  validation schema. Narrowing it breaks; widening it does not.

The direction that does not decide is still listed, as compatible changes. An event both
published and consumed is checked both ways. See `broadcaster.schemacheck` for what a
schema comparison can and cannot see: custom validators are invisible to it.

Major versions: a breaking change to a published event is allowed when its major went
up (consumers must first read the new major; the output says so). A consumed event
whose major went up needs an upcaster from every older major it may still receive;
without one every old message is dead-lettered, so that is breaking.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broadcaster.exceptions import ContractError
from broadcaster.schemacheck import ROOT_PATH, findings
from broadcaster.snapshot import SNAPSHOT_FORMAT, Meta, read_meta

__all__ = ["INVISIBLE", "Change", "compare"]

JsonSchema = Mapping[str, Any]

INVISIBLE = (
    "custom validators (@field_validator, @model_validator, AfterValidator, ...) and serializers "
    "without a return type are invisible to this check: review those by hand"
)


@dataclass(frozen=True)
class Change:
    """One difference between the snapshot and the live contract."""

    event: str
    path: str
    what: str
    breaking: bool
    allowed: bool = False  # breaking, but the event's major version went up
    note: bool = False  # neither: something the check cannot see

    def __str__(self) -> str:
        if self.note:
            verdict = "note"
        elif not self.breaking:
            verdict = "compatible"
        else:
            verdict = "breaking (allowed: major version went up)" if self.allowed else "BREAKING"
        return f"{verdict}: {self.event} {self.path}: {self.what}"


def compare(old: Mapping[str, JsonSchema], new: Mapping[str, JsonSchema]) -> list[Change]:
    """Every change from the snapshot `old` to the live `new` (event -> schema document)."""
    changes: list[Change] = []
    for event in sorted(old.keys() | new.keys()):
        if event not in new:
            changes.append(_removed_event(event, read_meta(old[event])))
        elif event not in old:
            changes.append(Change(event, ROOT_PATH, f"new event ({_roles(read_meta(new[event]))})", breaking=False))
        else:
            try:
                changes.extend(_compare_event(event, old[event], new[event]))
            except (TypeError, AttributeError, ValueError, KeyError, ArithmeticError, RecursionError, re.error) as exc:
                raise ContractError(f"event {event!r}: the snapshot's schema cannot be compared ({exc!r})") from exc
        if event in old and read_meta(old[event]).snapshot_format < SNAPSHOT_FORMAT:
            what = "the snapshot keeps no serialization schema (format 1): run `export --output` again"
            changes.append(Change(event, ROOT_PATH, what, breaking=False, note=True))
        if event in new and read_meta(new[event]).custom_validators:
            changes.append(Change(event, ROOT_PATH, f"has {INVISIBLE}", breaking=False, note=True))
    return changes


def _compare_event(event: str, old: JsonSchema, new: JsonSchema) -> list[Change]:
    before, after = read_meta(old), read_meta(new)
    changes = _versions(event, before, after)
    if before.published and not after.published:
        changes.append(Change(event, ROOT_PATH, "no longer published: its consumers get nothing", True))
    old_validation = {key: value for key, value in old.items() if key != "x-broadcaster"}
    new_validation = {key: value for key, value in new.items() if key != "x-broadcaster"}
    sent_by_new = findings(after.serialization, old_validation, writer_is_new=True)
    sent_by_old = findings(before.serialization, new_validation, writer_is_new=False)
    publishes = before.published and after.published
    consumes = before.consumed and after.consumed
    published_allowed = after.major > before.major
    consumed_allowed = after.major > before.major and not _missing_upcasters(before, after)
    for found in sent_by_new:
        changes.append(Change(event, found.path, found.what, publishes, publishes and published_allowed))
    for found in sent_by_old:
        changes.append(Change(event, found.path, found.what, consumes, consumes and consumed_allowed))
    return changes


def _versions(event: str, before: Meta, after: Meta) -> list[Change]:
    """What a change of schema_version means for each side."""
    shown = f"schema_version {before.schema_version} -> {after.schema_version}"
    if before.schema_version == after.schema_version:
        return []
    if after.major < before.major:
        return [Change(event, ROOT_PATH, f"{shown}: the major version went down", breaking=True)]
    if after.major == before.major:
        return [Change(event, ROOT_PATH, shown, breaking=False)]
    changes = []
    if after.published:
        changes.append(
            Change(
                event,
                ROOT_PATH,
                f"{shown}: consumers still on major {before.major} dead-letter the new messages "
                f"(unsupported-schema-version); every consumer of {event} must first deploy a schema of major "
                f"{after.major} with upcasters={{{before.major}: ...}} for messages still queued",
                breaking=True,
                allowed=True,
            )
        )
    if after.consumed:
        missing = _missing_upcasters(before, after)
        if missing:
            needed = ", ".join(f"{major}: ..." for major in missing)
            what = (
                f"{shown} without an upcaster from major {', '.join(map(str, missing))}: every message a producer "
                f"on major {before.major} sends is dead-lettered; subscribe with upcasters={{{needed}}}"
            )
            changes.append(Change(event, ROOT_PATH, what, breaking=True))
        else:
            what = f"{shown}: major {before.major} messages are read through upcasters (code: not checked)"
            changes.append(Change(event, ROOT_PATH, what, breaking=False, note=True))
    return changes


def _missing_upcasters(before: Meta, after: Meta) -> list[int]:
    return [major for major in range(before.major, after.major) if major not in after.upcasters]


def _removed_event(event: str, meta: Meta) -> Change:
    if meta.published:
        return Change(event, ROOT_PATH, "event removed: no longer published, its consumers get nothing", True)
    return Change(event, ROOT_PATH, "event removed: no longer consumed", breaking=False)


def _roles(meta: Meta) -> str:
    return " and ".join(role for role, on in (("published", meta.published), ("consumed", meta.consumed)) if on) or (
        "unused"
    )

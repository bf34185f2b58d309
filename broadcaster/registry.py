"""Which signals are broadcast as which events, and which events this service receives.

`broadcast()` checks a registration and connects a `producer.Broadcast` receiver, which
turns each `send()` into an event (the send-time path is producer.py's). `subscribe()`
records the local signal an incoming event is re-emitted on (by dispatch.py). Tests
undo their registrations with `isolated()`, or start from none with `reset()`.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from django.db.models.signals import ModelSignal
from django.dispatch import Signal
from pydantic import AliasChoices, AliasPath, BaseModel

from broadcaster.exceptions import RegistrationError
from broadcaster.payload import check_schema, schema_major
from broadcaster.producer import Broadcast, PartitionKey

__all__ = [
    "Subscription",
    "Upcaster",
    "broadcast",
    "broadcasts",
    "isolated",
    "reset",
    "subscribe",
    "subscriptions",
]

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_SCHEMA_VERSION = re.compile(r"^[0-9]{1,5}\.[0-9]+$")
DEFAULT_SCHEMA_VERSION = "1.0"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
Fanout = Literal["service", "instance"]


@dataclass(frozen=True, eq=False)
class Subscription:
    """An event this service receives and the local signal it is re-emitted on."""

    event: str
    schema: type[BaseModel]
    signal: Signal
    sender: object
    schema_version: str
    inbox: bool = False
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)
    lossless: bool = False  # the schema has Decimal fields: JSON numbers must not pass through float
    fanout: Fanout = "service"
    sources: frozenset[str] | None = None  # the services this event is accepted from; None: any
    ordered: bool = False  # events of one partition key are handled one at a time, in order
    version_field: str | None = None  # with ordered: skip an event older than one already applied

    @functools.cached_property
    def major(self) -> int:
        """Major version of the schema; messages of another major are not read."""
        major = schema_major(self.schema_version)
        assert major is not None, self.schema_version  # subscribe() checked it
        return major

    @functools.cached_property
    def field_names(self) -> tuple[str, ...]:
        """The schema's fields, the keyword arguments its receivers get (read once: every event needs them)."""
        return tuple(self.schema.model_fields)


_Registration = tuple[int, str, object]  # id of the signal, event, sender
_broadcasts: dict[_Registration, Broadcast] = {}
_subscriptions: dict[str, Subscription] = {}


def broadcast(
    signal: Signal, *, event: str, schema: type[BaseModel], sender: object = None, key: PartitionKey | None = None
) -> None:
    """Publish every `send()` of `signal` (from `sender`, if given) as `event`.

    The payload is ``schema.model_validate(kwargs, from_attributes=True)``; kwargs the
    schema does not name are not sent. Calling it again with the same arguments does
    nothing. For model signals `sender` may be a model class or ``"app_label.Model"``.
    `key` names the schema field (or is a function of the validated payload) whose value
    identifies the entity the event is about; it travels as ``ce-partitionkey`` and lets
    ``subscribe(..., ordered=True)`` keep the events of one entity in order.
    """
    _check_event(event)
    version = _schema_version(schema)
    check_schema(schema)
    _check_key(event, schema, key)
    if isinstance(sender, str) and not isinstance(signal, ModelSignal):
        raise RegistrationError(f"event {event!r}: a sender given as a string needs a model signal such as post_save")
    registration = (id(signal), event, sender)
    if existing := _broadcasts.get(registration):
        if existing.schema is not schema or existing.key != key:
            raise RegistrationError(
                f"event {event!r} is already broadcast with schema {existing.schema.__qualname__} "
                f"and key {existing.key!r}"
            )
        return
    for other in _broadcasts.values():
        if other.event == event and other.schema is not schema:
            raise RegistrationError(f"event {event!r} is already broadcast with schema {other.schema.__qualname__}")
    receiver = Broadcast(signal, event, schema, sender, version, _accepted_names(schema), key)
    signal.connect(receiver, sender=sender, weak=False, dispatch_uid=_uid(receiver))
    _broadcasts[registration] = receiver


def subscribe(
    event: str,
    *,
    schema: type[BaseModel],
    signal: Signal | None = None,
    sender: object = None,
    inbox: bool = False,
    upcasters: Mapping[int, Upcaster] | None = None,
    fanout: Fanout = "service",
    sources: Collection[str] | None = None,
    ordered: bool = False,
    version_field: str | None = None,
) -> Signal:
    """Re-emit incoming `event` on a local signal, which is returned (made when not given).

    Receivers get ``sender`` (the schema class unless `sender` is given), ``envelope``
    and the schema's fields as keyword arguments. With `inbox`, the receivers run in one
    transaction with a record of the envelope id, so a redelivery does not repeat them.
    `upcasters` maps an older major version N to a function that turns a version N
    payload (a dict) into a version N+1 one; messages of the same major are read as they
    are, fields this service does not know being ignored. With ``fanout="instance"``
    every running daemon gets the event (cache invalidation), not just one per service.
    `sources` names the services (ce-source) the event is accepted from; anything else
    is dead-lettered, so a service cannot speak for another even where it can write to
    this queue. With `ordered`, events with the same partition key (``broadcast(...,
    key=...)``) are handled one at a time, in the order they were published, whatever
    the number of daemons; a failing one is retried in place. `version_field` (ordered
    only) names an integer or datetime field: an event whose version is not newer than
    one already applied for its key is skipped, recorded with the receivers' work.
    """
    _check_event(event)
    version = _schema_version(schema)
    check_schema(schema)
    major = schema_major(version) or 0  # _schema_version() checked that it has one
    chain = _check_upcasters(event, major, upcasters or {})
    _check_delivery(event, schema, fanout, ordered, version_field)
    new = Subscription(
        event,
        schema,
        signal if signal is not None else Signal(),
        schema if sender is None else sender,
        version,
        inbox,
        MappingProxyType(chain),
        _has_decimal(schema.__pydantic_core_schema__),
        fanout,
        frozenset(sources) if sources is not None else None,
        ordered,
        version_field,
    )
    if existing := _subscriptions.get(event):
        if signal in (None, existing.signal) and _same_options(existing, new):
            return existing.signal
        raise RegistrationError(f"event {event!r} is already subscribed with another schema, signal or options")
    _subscriptions[event] = new
    return new.signal


def _same_options(existing: Subscription, new: Subscription) -> bool:
    """Whether `new` subscribes as `existing` does (its signal and sender aside): subscribing again is a no-op."""
    return (
        existing.schema is new.schema
        and (existing.inbox, existing.fanout, existing.ordered) == (new.inbox, new.fanout, new.ordered)
        and existing.version_field == new.version_field
        and existing.sources == new.sources
        and dict(existing.upcasters) == dict(new.upcasters)
    )


def _has_decimal(core_schema: object) -> bool:
    """Whether a pydantic core schema validates a Decimal anywhere inside it."""
    if isinstance(core_schema, dict):
        return core_schema.get("type") == "decimal" or any(_has_decimal(v) for v in core_schema.values())
    if isinstance(core_schema, list | tuple):
        return any(_has_decimal(item) for item in core_schema)
    return False


def _field(schema: type[BaseModel], path: str) -> object:
    """The annotation at a dotted field path of `schema`, or None if there is no such field."""
    annotation: object = schema
    for name in path.split("."):
        fields = annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else {}
        info = fields.get(name)
        if info is None:
            return None
        annotation = info.annotation
    return annotation


def _check_key(event: str, schema: type[BaseModel], key: PartitionKey | None) -> None:
    if key is None or callable(key):
        return
    if not isinstance(key, str) or _field(schema, key) is None:
        raise RegistrationError(
            f"event {event!r}: key must name a field of {schema.__qualname__} (a dotted path such as "
            f"'instance.id' for a nested one: {', '.join(schema.model_fields)}) or be a function of the payload, "
            f"not {key!r}"
        )


_VERSION_TYPES = (int, datetime.datetime, datetime.date)


def _check_delivery(
    event: str, schema: type[BaseModel], fanout: Fanout, ordered: bool, version_field: str | None
) -> None:
    if fanout not in ("service", "instance"):
        raise RegistrationError(f"event {event!r}: fanout must be 'service' or 'instance', not {fanout!r}")
    if ordered and fanout != "service":
        raise RegistrationError(f"event {event!r}: ordered=True needs fanout='service'")
    if version_field is None:
        return
    if not ordered:
        raise RegistrationError(f"event {event!r}: version_field needs ordered=True (versions are kept per key)")
    annotation = _field(schema, version_field)
    if not (isinstance(annotation, type) and issubclass(annotation, _VERSION_TYPES)) or issubclass(annotation, bool):
        raise RegistrationError(
            f"event {event!r}: version_field {version_field!r} must be an int, date or datetime field of "
            f"{schema.__qualname__} (a required one), not {annotation!r}"
        )


def _check_upcasters(event: str, major: int, upcasters: Mapping[int, Upcaster]) -> dict[int, Upcaster]:
    for version, upcaster in upcasters.items():
        if not isinstance(version, int) or not 0 <= version < major or not callable(upcaster):
            raise RegistrationError(
                f"event {event!r}: upcasters must map an older major version (0 to {major - 1}) "
                f"to a function, not {version!r}: {upcaster!r}"
            )
    return dict(upcasters)


def broadcasts() -> list[Broadcast]:
    """Every registered broadcast, in registration order."""
    return list(_broadcasts.values())


def subscriptions() -> dict[str, Subscription]:
    """Every subscription of this process, by event type."""
    return dict(_subscriptions)


def reset() -> None:
    """Forget every broadcast and subscription, disconnecting the broadcasts' receivers.

    For tests that start from no registration at all; `isolated()` keeps the ones made
    before (by your apps' ``ready()``, say) and undoes only a test's own.
    """
    _undo({}, {})


@contextmanager
def isolated() -> Iterator[None]:
    """Undo, when the block ends, every broadcast() and subscribe() made within it.

    For tests: wrap a test (a fixture) that registers events of its own, so that they
    do not leak into the next one. Registrations made before the block stay.
    """
    broadcasts_before, subscriptions_before = dict(_broadcasts), dict(_subscriptions)
    try:
        yield
    finally:
        _undo(broadcasts_before, subscriptions_before)


def _undo(
    broadcasts_kept: dict[tuple[int, str, object], Broadcast], subscriptions_kept: dict[str, Subscription]
) -> None:
    for key, receiver in list(_broadcasts.items()):
        if key not in broadcasts_kept:
            receiver.signal.disconnect(receiver, sender=receiver.sender, dispatch_uid=_uid(receiver))
    for receiver in broadcasts_kept.values():  # connected again if reset() disconnected it; a no-op if not
        receiver.signal.connect(receiver, sender=receiver.sender, weak=False, dispatch_uid=_uid(receiver))
    _broadcasts.clear()
    _broadcasts.update(broadcasts_kept)
    _subscriptions.clear()
    _subscriptions.update(subscriptions_kept)


def _uid(receiver: Broadcast) -> str:
    return f"broadcaster:{receiver.event}"


def _check_event(event: str) -> None:
    if not _EVENT_NAME.match(event) or len(event) > 255:
        raise RegistrationError(
            f"event name {event!r} must be dot-separated words of letters, digits, '-' or '_' "
            "(it is the routing key; wildcards are not allowed)"
        )


def _schema_version(schema: type[BaseModel]) -> str:
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise RegistrationError(f"schema must be a pydantic BaseModel subclass, not {schema!r}")
    version = getattr(schema, "schema_version", DEFAULT_SCHEMA_VERSION)
    if not isinstance(version, str) or not _SCHEMA_VERSION.match(version):
        raise RegistrationError(
            f"{schema.__qualname__}.schema_version must be a 'major.minor' string such as '1.0', not {version!r}"
        )
    return version


def _accepted_names(schema: type[BaseModel]) -> frozenset[str] | None:
    """The kwargs to hand to a schema that refuses or keeps unknown fields; None if it ignores them."""
    if schema.model_config.get("extra", "ignore") == "ignore":
        return None
    names = set(schema.model_fields)
    for info in schema.model_fields.values():
        aliases = [info.alias, info.validation_alias]
        if isinstance(info.validation_alias, AliasChoices):
            aliases += info.validation_alias.choices
        names.update(alias for alias in aliases if isinstance(alias, str))
        names.update(str(alias.path[0]) for alias in aliases if isinstance(alias, AliasPath))
    return frozenset(names)

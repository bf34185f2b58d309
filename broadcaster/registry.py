"""Which signals are broadcast as which events, and which events this service receives.

`broadcast()` connects a receiver that turns a signal's kwargs into a validated event
and hands it to the publisher after the transaction commits. `subscribe()` records the
local signal an incoming event is re-emitted on. While an incoming event is being
re-emitted, `handling()` marks it, so that the re-emission is never published again and
events its receivers fire carry it as their cause.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.signals import ModelSignal
from django.dispatch import Signal
from pydantic import AliasChoices, AliasPath, BaseModel, ValidationError

from broadcaster import observability, transport
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import (
    HopLimitExceeded,
    InvalidPayload,
    MessageTooLarge,
    RegistrationError,
)
from broadcaster.payload import check_schema
from broadcaster.settings import get_settings

__all__ = [
    "Broadcast",
    "Subscription",
    "Upcaster",
    "broadcast",
    "broadcasts",
    "current_envelope",
    "handling",
    "subscribe",
    "subscriptions",
]

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_SCHEMA_VERSION = re.compile(r"^(\d+)\.(\d+)$")
DEFAULT_SCHEMA_VERSION = "1.0"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
Fanout = Literal["service", "instance"]
PartitionKey = str | Callable[[Any], object]
"""A schema field name, or a function of the validated payload, whose value names the entity."""
_KEY_LIMIT = 255

# (signal being re-emitted, its envelope) while dispatching an incoming event.
_handling: ContextVar[tuple[Signal, Envelope] | None] = ContextVar("broadcaster_handling", default=None)


@dataclass(frozen=True, eq=False)
class Broadcast:
    """The receiver that publishes one signal as one event."""

    signal: Signal
    event: str
    schema: type[BaseModel]
    sender: object
    schema_version: str
    accepted: frozenset[str] | None  # the kwargs the schema reads; None: it ignores the rest itself
    key: PartitionKey | None = None

    def __post_init__(self) -> None:
        # send_robust() and asend_robust() log a receiver that raised by its __qualname__,
        # which an instance lacks: without one, the logging itself would raise.
        object.__setattr__(self, "__qualname__", f"{type(self).__qualname__}[{self.event}]")

    def __call__(self, sender: object, **kwargs: Any) -> None:
        current = _handling.get()
        if current is not None and current[0] is self.signal and kwargs.get("envelope") is current[1]:
            return  # a re-emission of a remote event: publishing it again would loop
        message = self.message(sender, kwargs, cause=current[1] if current else None)
        using = kwargs.get("using") or DEFAULT_DB_ALIAS
        if get_settings().publish_mode == "outbox" and not transport.is_overridden():
            _store_in_outbox(message, using)
        elif _in_atomic_block(using):
            # A full buffer must fail the request now, while the transaction can still roll
            # back; after the commit the event is always taken (see Publisher.publish).
            transport.get_publisher().ensure_room()
            transaction.on_commit(
                lambda: transport.get_publisher().publish(message, wait=False), using=using, robust=True
            )
        else:
            # What on_commit would do in autocommit mode, without opening a DB connection.
            transport.get_publisher().publish(message)

    def message(self, sender: object, kwargs: dict[str, Any], cause: Envelope | None) -> OutboundMessage:
        """Validate the signal's kwargs and serialize them; the envelope is made later."""
        settings = get_settings()
        if cause is not None and cause.hops + 1 > settings.max_hops:
            raise HopLimitExceeded(self.event, cause.hops + 1, settings.max_hops)
        # A schema that ignores unknown fields (pydantic's default) is given the kwargs as
        # they are: copying out the ones it names would only cost the caller time.
        data = kwargs if self.accepted is None else {name: kwargs[name] for name in self.accepted if name in kwargs}
        try:
            payload = self.schema.__pydantic_validator__.validate_python(data, from_attributes=True)
        except ValidationError as exc:
            raise InvalidPayload(self.event, _describe(exc)) from exc
        body = self.schema.__pydantic_serializer__.to_json(payload, by_alias=True)  # the wire form: see payload.py
        if len(body) > settings.max_message_bytes:
            raise MessageTooLarge(self.event, len(body), settings.max_message_bytes)
        return OutboundMessage.draft(
            body,
            source=settings.service_name,
            type=self.event,
            subject=_label(sender),
            schema_version=self.schema_version,
            cause=cause,
            traceparent=observability.current_traceparent(),
            partition_key=None if self.key is None else self.partition_key(payload),
        )

    def partition_key(self, payload: BaseModel) -> str:
        """The ``ce-partitionkey`` of `payload`: the key field's value, or what the key function returns."""
        value = field_value(payload, self.key) if isinstance(self.key, str) else self.key(payload)  # type: ignore[misc]
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
            raise InvalidPayload(self.event, [f"partition key: {value!r} is not a string, an integer or a UUID"])
        text = str(value)
        if not text or len(text.encode()) > _KEY_LIMIT:
            raise InvalidPayload(self.event, [f"partition key: must be 1-{_KEY_LIMIT} bytes, not {len(text)}"])
        return text


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

    @property
    def major(self) -> int:
        """Major version of the schema; messages of another major are not read."""
        return _major(self.schema_version)


_broadcasts: dict[tuple[int, str, object], Broadcast] = {}
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
    signal.connect(receiver, sender=sender, weak=False, dispatch_uid=f"broadcaster:{event}")
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
    if fanout not in ("service", "instance"):
        raise RegistrationError(f"event {event!r}: fanout must be 'service' or 'instance', not {fanout!r}")
    _check_event(event)
    version = _schema_version(schema)
    check_schema(schema)
    chain = _check_upcasters(event, _major(version), upcasters or {})
    _check_ordering(event, schema, fanout, ordered, version_field)
    if existing := _subscriptions.get(event):
        same = (
            existing.schema is schema
            and (existing.inbox, existing.fanout, existing.ordered) == (inbox, fanout, ordered)
            and existing.version_field == version_field
            and existing.sources == (frozenset(sources) if sources is not None else None)
            and dict(existing.upcasters) == chain
        )
        if same and signal in (None, existing.signal):
            return existing.signal
        raise RegistrationError(f"event {event!r} is already subscribed with another schema, signal or options")
    local = signal if signal is not None else Signal()
    sender = schema if sender is None else sender
    _subscriptions[event] = Subscription(
        event,
        schema,
        local,
        sender,
        version,
        inbox,
        MappingProxyType(chain),
        _has_decimal(schema.__pydantic_core_schema__),
        fanout,
        frozenset(sources) if sources is not None else None,
        ordered,
        version_field,
    )
    return local


def _has_decimal(core_schema: object) -> bool:
    """Whether a pydantic core schema validates a Decimal anywhere inside it."""
    if isinstance(core_schema, dict):
        return core_schema.get("type") == "decimal" or any(_has_decimal(v) for v in core_schema.values())
    if isinstance(core_schema, list | tuple):
        return any(_has_decimal(item) for item in core_schema)
    return False


def field_value(payload: object, path: str) -> object:
    """The value at a dotted field path (``"instance.id"``) of a validated payload (or a dict of its fields)."""
    for name in path.split("."):
        payload = payload[name] if isinstance(payload, dict) else getattr(payload, name)
    return payload


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


def _check_ordering(
    event: str, schema: type[BaseModel], fanout: Fanout, ordered: bool, version_field: str | None
) -> None:
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


def current_envelope() -> Envelope | None:
    """The envelope of the remote event being handled on this thread, if any."""
    current = _handling.get()
    return current[1] if current else None


@contextmanager
def handling(signal: Signal, envelope: Envelope) -> Iterator[None]:
    """Mark `signal` as re-emitting the remote event of `envelope` for the block."""
    token = _handling.set((signal, envelope))
    try:
        yield
    finally:
        _handling.reset(token)


_connections = threading.local()  # this thread's Django connection objects, by alias


def _in_atomic_block(using: str) -> bool:
    """``transaction.get_connection(using).in_atomic_block``, at a tenth of the cost.

    Django keeps one connection object per thread and alias for the thread's life, and
    its lookup raises and catches an exception every time (asgiref asks for a running
    event loop). Under an event loop connections are per task, so they are looked up.
    """
    if asyncio._get_running_loop() is not None:
        return bool(transaction.get_connection(using).in_atomic_block)
    known: dict[str, BaseDatabaseWrapper] | None = getattr(_connections, "by_alias", None)
    if known is None:
        known = _connections.by_alias = {}
    wrapper = known.get(using)
    if wrapper is None:
        wrapper = known[using] = transaction.get_connection(using)
    return bool(wrapper.in_atomic_block)


def _store_in_outbox(message: OutboundMessage, using: str) -> None:
    from broadcaster import outbox  # noqa: PLC0415 - models load only once apps are ready

    outbox.store(message, using)
    transaction.on_commit(lambda: outbox.wake(using), using=using)


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


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


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


def _describe(exc: ValidationError) -> list[str]:
    return [
        f"field {'.'.join(str(part) for part in error['loc']) or '(payload)'!r}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]


def _label(sender: object) -> str | None:
    if isinstance(sender, type):
        return _class_label(sender)
    if sender is None:
        return None
    return _model_label(sender) or str(sender)[:200]


@functools.lru_cache(maxsize=256)
def _class_label(sender: type) -> str:
    # Senders are mostly model classes, labelled on every send().
    return _model_label(sender) or f"{sender.__module__}.{sender.__qualname__}"


def _model_label(sender: object) -> str | None:
    """``app_label.Model`` of a model class or instance, None for anything else."""
    meta = getattr(sender, "_meta", None)
    return str(meta.label) if meta is not None and hasattr(meta, "label") else None

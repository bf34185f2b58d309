"""The send-time path: a broadcast signal's kwargs become an event, handed on at the right time.

`Broadcast` is the receiver `registry.broadcast()` connects. On each `send()` it
validates the kwargs against the schema, serializes them (see payload.py) and drafts
the message, then: in outbox mode writes an outbox row in the caller's transaction;
inside a transaction hands the message to the publisher on commit (after checking, now,
that there is room for it); otherwise hands it over at once. A re-emission of a remote
event (`dispatch.handling`) is never published again.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.dispatch import Signal
from pydantic import BaseModel, ValidationError

from broadcaster import observability, transport
from broadcaster.dispatch import re_emitting
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import HopLimitExceeded, InvalidPayload, MessageTooLarge
from broadcaster.payload import field_value, may_drop_values, wire_problem
from broadcaster.settings import get_settings

__all__ = ["Broadcast", "PartitionKey"]

PartitionKey = str | Callable[[Any], object]
"""A schema field name, or a function of the validated payload, whose value names the entity."""
_KEY_LIMIT = 255


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
        current = re_emitting.get()
        if current is not None and current[0] is self.signal and kwargs.get("envelope") is current[1]:
            return  # a re-emission of a remote event: publishing it again would loop
        message = self.message(sender, kwargs, cause=current[1] if current else None)
        using = kwargs.get("using") or DEFAULT_DB_ALIAS
        if get_settings().publish_mode == "outbox" and not transport.is_overridden():
            _store_in_outbox(message, using)
        elif transaction.get_connection(using).in_atomic_block:
            # A full buffer must fail the request now, while the transaction can still roll
            # back; after the commit the event is always taken (see Publisher.publish).
            transport.get_publisher().ensure_room()
            transaction.on_commit(
                lambda: transport.get_publisher().publish(message, wait=False), using=using, robust=True
            )
        else:
            # What on_commit would do in autocommit mode, without opening a DB connection.
            transport.get_publisher().publish(message)

    @functools.cached_property
    def may_drop_values(self) -> bool:
        """Whether send() must look at a body for values its JSON dropped (see payload.wire_problem)."""
        return may_drop_values(self.schema)

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
        if self.may_drop_values and (problem := wire_problem(self.schema, payload, body)) is not None:
            raise InvalidPayload(self.event, [problem])  # null for a number, asterisks for a secret
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


def _store_in_outbox(message: OutboundMessage, using: str) -> None:
    from broadcaster import outbox  # noqa: PLC0415 - models load only once apps are ready

    outbox.store(message, using)
    transaction.on_commit(lambda: outbox.wake(using), using=using)


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

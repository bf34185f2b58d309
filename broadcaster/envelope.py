"""The CloudEvents envelope and its mapping onto AMQP messages.

Messages are CloudEvents 1.0 in the RabbitMQ protocol binding's binary content mode:
the body is the payload JSON and the attributes are ``ce-`` headers. Structured mode
(``application/cloudevents+json``) is accepted on the way in.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pika

from broadcaster import jsondepth
from broadcaster.exceptions import RejectedMessage
from broadcaster.failures import Reason

__all__ = [
    "Envelope",
    "IncomingMessage",
    "OutboundMessage",
    "attribute_text",
    "decode",
    "envelope_from_headers",
    "exact_json",
    "properties_for",
]

SPECVERSION = "1.0"
JSON = "application/json"
STRUCTURED_JSON = "application/cloudevents+json"
_JSON_TYPES = frozenset({JSON, "text/json"})
_REQUIRED = ("id", "source", "type", "specversion")
_DELIVERY_MODE_PERSISTENT = 2
_EXACT_JSON = json.JSONDecoder(parse_float=Decimal)  # json.loads(parse_float=...) builds one per call


@dataclass(frozen=True, slots=True)
class Envelope:
    """The CloudEvent attributes of one event, handed to receivers as ``envelope``.

    `id` is stable across redeliveries: receivers that must not repeat an effect key
    on it. `attempt` counts deliveries to this service (1 on the first).
    """

    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    schema_version: str | None = None
    causation_id: str | None = None
    hops: int = 0
    traceparent: str | None = None
    partition_key: str | None = None
    """The entity the event is about (``ce-partitionkey``): ordered subscriptions handle
    the events of one key one at a time, in the order they were published."""
    attempt: int = field(default=1, compare=False)

    @classmethod
    def new(
        cls,
        *,
        source: str,
        type: str,
        subject: str | None = None,
        schema_version: str | None = None,
        cause: Envelope | None = None,
        traceparent: str | None = None,
        time: datetime | None = None,
        partition_key: str | None = None,
    ) -> Envelope:
        """Make the envelope of an event fired at `time` (now), caused by `cause` when given."""
        return cls(
            id=_new_id(),
            source=source,
            type=type,
            time=time or datetime.now(UTC),
            subject=subject,
            schema_version=schema_version,
            causation_id=cause.id if cause else None,
            hops=cause.hops + 1 if cause else 0,
            traceparent=traceparent,
            partition_key=partition_key,
        )

    def headers(self) -> dict[str, str]:
        """The ``ce-`` headers of binary content mode."""
        headers = {
            "ce-specversion": SPECVERSION,
            "ce-id": self.id,
            "ce-source": self.source,
            "ce-type": self.type,
            "ce-time": _format_time(self.time),
            "ce-hops": str(self.hops),
        }
        optional = {
            "ce-subject": self.subject,
            "ce-schemaversion": self.schema_version,
            "ce-causationid": self.causation_id,
            "ce-traceparent": self.traceparent,
            "ce-partitionkey": self.partition_key,
        }
        headers.update({key: value for key, value in optional.items() if value is not None})
        return headers


def envelope_from_headers(headers: Mapping[str, Any]) -> Envelope:
    """Rebuild an envelope from the ``ce-`` headers it wrote (as the outbox stores them)."""
    return _envelope(_binary(headers), attempt=1)


def properties_for(
    envelope: Envelope, *, user_id: str | None = None, headers: dict[str, str] | None = None
) -> pika.BasicProperties:
    """AMQP properties of a binary-mode message; they mirror the ``ce-`` headers.

    `user_id` is checked by the broker against the publishing connection's user, so a
    consumer can trust it (REQUIRE_USER_ID). `headers` replaces the envelope's own
    (when they were signed).
    """
    return pika.BasicProperties(
        content_type=JSON,
        delivery_mode=_DELIVERY_MODE_PERSISTENT,
        message_id=envelope.id,
        type=envelope.type,
        app_id=envelope.source,
        timestamp=int(envelope.time.timestamp()),
        user_id=user_id,
        headers=envelope.headers() if headers is None else headers,
    )


_ID_BYTES = 16
_ID_CHUNK = _ID_BYTES * 256
_id_pool = threading.local()


def _new_id() -> str:
    """A version 4 UUID from OS randomness, read 256 ids at a time.

    Unpredictable (a guessable id would let an injected event pre-empt a real one in an
    inbox) without a system call per event, which made the caller hand over the GIL.
    """
    pool: bytes = getattr(_id_pool, "bytes", b"")
    position: int = getattr(_id_pool, "position", 0)
    if position >= len(pool):
        pool, position = os.urandom(_ID_CHUNK), 0
        _id_pool.bytes = pool
    _id_pool.position = position + _ID_BYTES
    raw = bytearray(pool[position : position + _ID_BYTES])
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()  # what uuid.UUID(bytes=..., version=4) prints, at a third of the cost
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _forget_ids_after_fork() -> None:
    # A forked child must not hand out the ids left in its parent's pool.
    _id_pool.__dict__.clear()


os.register_at_fork(after_in_child=_forget_ids_after_fork)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class OutboundMessage:
    """An event ready for the broker: its payload JSON and its envelope.

    A message made by `draft()` (what ``send()`` does) builds its envelope when the
    envelope is first read, usually on the publisher's I/O thread, from the time and
    cause recorded at ``send()``: the caller's thread only validates and serializes.
    Only the thread holding a message reads it, so the envelope is made once.
    """

    __slots__ = ("_draft", "_envelope", "body", "type")

    def __init__(self, envelope: Envelope, body: bytes) -> None:
        self.body = body
        self.type = envelope.type
        self._envelope: Envelope | None = envelope
        self._draft: _Draft | None = None

    @classmethod
    def draft(
        cls,
        body: bytes,
        *,
        source: str,
        type: str,
        subject: str | None,
        schema_version: str | None,
        cause: Envelope | None,
        traceparent: str | None,
        partition_key: str | None = None,
    ) -> OutboundMessage:
        """A message of an event fired now, whose envelope is made when first read."""
        message = cls.__new__(cls)
        message.body, message.type, message._envelope = body, type, None
        message._draft = (time.time_ns(), source, subject, schema_version, cause, traceparent, partition_key)
        return message

    @property
    def envelope(self) -> Envelope:
        """The CloudEvent attributes; made on first read for a drafted message."""
        envelope = self._envelope
        if envelope is None:
            assert self._draft is not None  # one of the two is always set
            nanoseconds, source, subject, schema_version, cause, traceparent, partition_key = self._draft
            envelope = self._envelope = Envelope.new(
                source=source,
                type=self.type,
                subject=subject,
                schema_version=schema_version,
                cause=cause,
                traceparent=traceparent,
                # Whole microseconds, cut as datetime.now() cuts them: a float would round
                # up now and then, past the moment send() ran.
                time=_EPOCH + timedelta(microseconds=nanoseconds // 1000),
                partition_key=partition_key,
            )
            self._draft = None
        return envelope

    @property
    def routing_key(self) -> str:
        """Routing key on the topic exchange: the event type."""
        return self.type


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What send() records for an envelope made later: a plain tuple, the cheapest to build.
_Draft = tuple[int, str, str | None, str | None, Envelope | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A decoded message: its envelope and its payload.

    `data` is the payload JSON as bytes (binary mode), or the already parsed value of a
    structured-mode event's ``data`` member (numbers with a fraction as Decimal, so no
    precision is lost before the schema sees them).
    """

    envelope: Envelope
    data: bytes | object


def decode(properties: pika.BasicProperties, body: bytes, *, attempt: int = 1) -> IncomingMessage:
    """Read the envelope of a message in binary or structured mode.

    Raises RejectedMessage for anything that is not a JSON CloudEvent; nothing but the
    JSON parser ever looks at the body.
    """
    content_type = _media_type(properties.content_type)
    if content_type == STRUCTURED_JSON:
        attributes, data = _structured(body)
    elif content_type in _JSON_TYPES:
        attributes, data = _binary(properties.headers or {}), body
    else:
        raise RejectedMessage(
            Reason.CONTENT_TYPE,
            f"content type {properties.content_type!r} is not accepted; only JSON CloudEvents are",
        )
    return IncomingMessage(_envelope(attributes, attempt), data)


def _media_type(content_type: object) -> str:
    # A missing content type is read as JSON: other CloudEvents producers omit it.
    if isinstance(content_type, bytes):  # pika hands over a short string that is not UTF-8 as bytes
        raise RejectedMessage(Reason.CONTENT_TYPE, f"content type {content_type[:40]!r} is not UTF-8")
    return str(content_type or JSON).split(";", 1)[0].strip().lower()


def _binary(headers: Mapping[str, Any]) -> dict[str, str]:
    attributes = {}
    for key, value in headers.items():
        name = str(key).lower()
        if name.startswith("ce-"):
            attributes[name[3:]] = value if type(value) is str else attribute_text(name, value)
    return attributes


def exact_json(document: bytes | str) -> Any:
    """JSON as Python values, as json.loads() reads it, but numbers with a fraction as exact Decimals."""
    if isinstance(document, bytes):
        document = document.decode(json.detect_encoding(document), "surrogatepass")
    return _EXACT_JSON.decode(document)


def attribute_text(name: str, value: object) -> str:
    """The text of the ``ce-`` header `name`, as the envelope reads it; RejectedMessage if it has none."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"header {name!r} is not UTF-8") from exc
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"header {name!r} is a {type(value).__name__}, not a string")


def _structured(body: bytes) -> tuple[dict[str, str], object]:
    jsondepth.check(body, enclosing=1)
    try:
        document = exact_json(body)
    except (ValueError, RecursionError) as exc:
        raise RejectedMessage(Reason.NOT_JSON, f"structured CloudEvent is not valid JSON: {exc}") from exc
    except ArithmeticError as exc:  # decimal.InvalidOperation: an exponent past what Decimal holds
        raise RejectedMessage(Reason.NOT_JSON, "structured CloudEvent has a number too large to represent") from exc
    if not isinstance(document, dict):
        raise RejectedMessage(Reason.NOT_JSON, "structured CloudEvent is not a JSON object")
    data: object = document.pop("data", None)
    if "data_base64" in document:
        data = _base64(document.pop("data_base64"))
    content_type = document.pop("datacontenttype", None)
    if content_type is not None and not isinstance(content_type, str):
        raise RejectedMessage(Reason.CONTENT_TYPE, f"datacontenttype is a {type(content_type).__name__}, not a string")
    media = _media_type(content_type)
    if media not in _JSON_TYPES:
        raise RejectedMessage(Reason.CONTENT_TYPE, f"datacontenttype {media!r} is not JSON")
    return {str(key): attribute_text(str(key), value) for key, value in document.items()}, data


def _base64(value: object) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError as exc:
        raise RejectedMessage(Reason.NOT_JSON, "data_base64 is not valid base64") from exc


def _envelope(attributes: dict[str, str], attempt: int) -> Envelope:
    missing = [name for name in _REQUIRED if not attributes.get(name)]
    if missing:
        raise RejectedMessage(Reason.BAD_ATTRIBUTE, "missing CloudEvents attribute(s): " + ", ".join(missing))
    if attributes["specversion"] != SPECVERSION:
        raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"specversion {attributes['specversion']!r} is not 1.0")
    return Envelope(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        time=_parse_time(attributes.get("time")),
        subject=attributes.get("subject"),
        schema_version=attributes.get("schemaversion"),
        causation_id=attributes.get("causationid"),
        hops=_parse_hops(attributes.get("hops")),
        traceparent=attributes.get("traceparent"),
        partition_key=attributes.get("partitionkey"),
        attempt=attempt,
    )


def _parse_time(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"ce-time {value!r} is not RFC 3339") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_hops(value: str | None) -> int:
    if value is None:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise RejectedMessage(Reason.BAD_ATTRIBUTE, f"ce-hops {value[:20]!r} is not a small whole number")
    return int(value)

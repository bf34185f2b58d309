"""Dead letters read: connect, count, list and describe them, and the walk every tool takes.

The operator side of the dead-letter queue the consumer fills (`<queue>.dead-letter`);
`broadcaster.sweep` replays or purges them along the same walk. Nothing loses a message:

- Messages are read with ``basic_get`` and no ack, so the broker keeps owning them.
  Every message not acted on is handed back at the end with one ``basic_nack(requeue)``
  (and the broker hands back anything still held if the connection drops first).
- A replayed message is acked, which removes it from the dead-letter queue, only after
  the broker confirmed its copy on the service queue. A crash between the two leaves it
  in both places: a duplicate delivery, which receivers already tolerate (at least once).
- A walk looks at no more messages than the queue held when it began. Messages held
  unacked are not handed out again, so each is seen once; and a replayed message that
  fails again while the walk runs joins the tail, past the walk's end, instead of being
  replayed in a loop.

Order: a classic queue puts requeued messages back in their original positions, so a
listing leaves the queue as it found it. A quorum queue may return them ahead of the
rest; that is harmless, because nothing consumes the dead-letter queue in order: replay
picks messages by filter, and the daemon never promised a global order (see README).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions

from broadcaster import connection, failures, jsondepth, properties
from broadcaster.envelope import STRUCTURED_JSON
from broadcaster.exceptions import (
    CONNECTION_LOST,
    BrokerRefused,
    BrokerUnavailable,
    QueueNotFound,
)
from broadcaster.settings import BroadcasterSettings

__all__ = [
    "EVERYTHING",
    "Content",
    "DeadLetter",
    "Held",
    "Listing",
    "Match",
    "connect",
    "count",
    "describe",
    "describe_safely",
    "event_type",
    "peek",
    "release",
    "wait_for_requeued",
    "walk",
]

SETTLE_TIMEOUT = 5.0
_NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What one dead-lettered message is and why it failed; None where a header is missing."""

    id: str | None
    """The envelope id: ``ce-id``, the ``message_id`` property, or a structured event's ``id``."""
    event: str | None
    """The event type: ``ce-type``, the ``type`` property, a structured event's ``type``, or the routing key."""
    routing_key: str | None
    """The routing key the message arrived on the service queue with."""
    reason: str | None
    error: str | None
    exception: str | None
    attempts: int | None
    dead_lettered_at: datetime | None
    age: float | None
    """Seconds since the message was dead-lettered, when that is known."""
    size: int

    def as_json(self) -> dict[str, object]:
        """A JSON-ready mapping (times as RFC 3339 strings)."""
        at = self.dead_lettered_at
        return {
            "id": self.id,
            "event": self.event,
            "routing_key": self.routing_key,
            "reason": self.reason,
            "error": self.error,
            "exception": self.exception,
            "attempts": self.attempts,
            "dead_lettered_at": at.isoformat() if at else None,
            "age_seconds": None if self.age is None else round(self.age, 3),
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
class Match:
    """Which dead letters a command acts on; every given criterion must hold."""

    event: str | None = None
    """The event type (``ce-type``) or the routing key the message arrived with."""
    id: str | None = None
    """The envelope id (``ce-id``, or the ``message_id`` property)."""

    @property
    def everything(self) -> bool:
        """True when no criterion is set."""
        return self.event is None and self.id is None

    def __call__(self, letter: DeadLetter) -> bool:
        if self.id is not None and letter.id != self.id:
            return False
        return self.event is None or self.event in (letter.event, letter.routing_key)

    def __str__(self) -> str:
        criteria = [f"{name} {value!r}" for name, value in (("event", self.event), ("id", self.id)) if value]
        return " and ".join(criteria) or "everything"


@dataclass(frozen=True, slots=True)
class Content:
    """What one dead letter carries, for a page that shows it: its headers and body as read."""

    headers: Mapping[str, object]
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class Listing:
    """The head of a dead-letter queue, as peek() saw it."""

    queue: str
    total: int
    """Messages in the queue when the listing began."""
    scanned: int
    letters: tuple[DeadLetter, ...]
    contents: tuple[Content, ...] = ()
    """With ``peek(contents=True)``: each letter's headers and body, in the order of `letters`."""


EVERYTHING = Match()


@contextmanager
def connect(settings: BroadcasterSettings) -> Iterator[Any]:
    """A blocking channel in confirm mode on a connection of its own, closed afterwards.

    Raises BrokerUnavailable (never with the password) if the broker cannot be reached
    or the connection is lost; messages held at that moment go back to the queue.
    """
    properties.install_tolerant_decoder()  # a dead letter pika cannot decode must not end the walk
    try:
        conn = connection.connect_blocking(connection.Nodes(settings, "dead-letters"))
    except CONNECTION_LOST as exc:
        raise BrokerUnavailable(_unreachable(settings, "cannot connect to", exc)) from exc
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        yield channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise _channel_error(settings, exc) from exc
    except CONNECTION_LOST as exc:
        raise BrokerUnavailable(_unreachable(settings, "lost the connection to", exc)) from exc
    finally:
        connection.close_quietly(conn)


def count(channel: Any, queue: str) -> int:
    """Messages ready in `queue`; raises QueueNotFound if it does not exist."""
    try:
        declared = channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == _NOT_FOUND:
            raise QueueNotFound(f"queue {queue!r} does not exist (consume_signals declares it)") from exc
        raise
    return int(declared.method.message_count)


def peek(
    channel: Any,
    queue: str,
    *,
    settings: BroadcasterSettings,
    limit: int,
    match: Match = EVERYTHING,
    now: datetime | None = None,
    contents: bool = False,
) -> Listing:
    """Describe up to `limit` dead letters from the head of `queue` that `match`, leaving them all there.

    With `contents`, the listing carries each one's headers and body too (`Listing.contents`).
    """
    total = count(channel, queue)
    budget = min(limit, total) if match.everything else total
    letters: list[DeadLetter] = []
    kept: list[Content] = []
    scanned = 0
    try:
        for held in walk(channel, queue, budget):
            scanned += 1
            letter = describe_safely(held, settings, now)
            if match(letter):
                letters.append(letter)
                if contents:
                    kept.append(Content(dict(held.properties.headers or {}), held.properties.content_type, held.body))
                if len(letters) >= limit:
                    break
    finally:
        release(channel)
    wait_for_requeued(channel, queue, total)
    return Listing(queue, total, scanned, tuple(letters), tuple(kept))


def describe(
    properties: pika.BasicProperties, body: bytes, *, settings: BroadcasterSettings, now: datetime | None = None
) -> DeadLetter:
    """Read what the consumer (or the broker) wrote about why this message failed.

    The consumer's failure headers count only on a copy this service sealed
    (`broadcaster.failures`); on anything else they are ignored.
    """
    headers = properties.headers or {}
    structured = _structured(properties, body)
    record = failures.read(properties, body, settings)
    at = record.failed_at
    return DeadLetter(
        id=_text(headers.get("ce-id") or properties.message_id or structured.get("id")),
        event=_text(headers.get("ce-type") or properties.type or structured.get("type") or record.routing_key),
        routing_key=record.routing_key,
        reason=record.reason,
        error=record.error,
        exception=record.exception,
        attempts=record.attempts,
        dead_lettered_at=at,
        age=None if at is None else max(0.0, ((now or datetime.now(UTC)) - at).total_seconds()),
        size=len(body),
    )


def describe_safely(held: Held, settings: BroadcasterSettings, now: datetime | None) -> DeadLetter:
    """describe(), or what little can be said of a message it cannot read: a walk never stops."""
    try:
        letter = describe(held.properties, held.body, settings=settings, now=now)
    except Exception as exc:  # whatever a hostile message makes the reading code raise
        return DeadLetter(
            id=None,
            event=None,
            routing_key=None,
            reason="unreadable",
            error=f"the dead-letter tool cannot read this message: {type(exc).__name__}: {exc}"[:1000],
            exception=None,
            attempts=None,
            dead_lettered_at=None,
            age=None,
            size=len(held.body),
        )
    undecodable = properties.undecodable(held.properties)
    if undecodable is not None:
        return dataclasses.replace(letter, reason=letter.reason or "undecodable", error=f"properties: {undecodable}")
    return letter


@dataclass(frozen=True, slots=True)
class Held:
    """A message taken with basic_get and not acked yet: the broker still owns it."""

    tag: int
    properties: pika.BasicProperties
    body: bytes


def walk(channel: Any, queue: str, budget: int) -> Iterator[Held]:
    """At most `budget` messages from the head of `queue`, held unacked: hand them back with release().

    Unacked messages are not handed out again, so `budget` gets see each message once.
    """
    for _ in range(budget):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return
        yield Held(method.delivery_tag, properties, body)


def release(channel: Any) -> None:
    """Hand back every message this channel still holds, to its place in the queue."""
    # Tag 0 with multiple=True means every message this channel still holds. nack rather
    # than reject: it does not count as a failed delivery in a quorum queue.
    if channel.is_open:
        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)


def wait_for_requeued(channel: Any, queue: str, expected: int) -> int:
    """Messages ready in `queue`, once `expected` are (or after SETTLE_TIMEOUT seconds)."""
    # The broker requeues asynchronously: a count (or a command run right after this one)
    # could miss the messages just handed back. Wait, briefly, until they are visible;
    # if they are not by then, they are still safe, only late.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (ready := count(channel, queue)) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return ready


def _structured(properties: pika.BasicProperties, body: bytes) -> Mapping[str, Any]:
    # A structured-mode event carries its id and type in the body, not in headers.
    if not (properties.content_type or "").startswith(STRUCTURED_JSON) or jsondepth.too_deep(body):
        return {}
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return event if isinstance(event, dict) else {}


def event_type(properties: pika.BasicProperties) -> object:
    """The event type a copy is routed by: ``ce-type``, else the ``type`` property."""
    return _text((properties.headers or {}).get("ce-type")) or properties.type


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _channel_error(settings: BroadcasterSettings, exc: pika.exceptions.ChannelClosedByBroker) -> BrokerRefused:
    # Not BrokerUnavailable: the broker is there and said no (access refused, a queue of another type).
    return BrokerRefused(f"the broker at {settings.redacted_broker_url} refused: ({exc.reply_code}) {exc.reply_text}")


def _unreachable(settings: BroadcasterSettings, what: str, exc: BaseException) -> str:
    return f"{what} the broker at {settings.redacted_broker_url}: {connection.describe_redacted(exc, settings)}"

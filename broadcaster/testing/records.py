"""What the in-memory broker records for a test to assert on: deliveries, retries, dead letters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pika

from broadcaster.dispatch import Outcome
from broadcaster.envelope import Envelope
from broadcaster.failures import Record
from broadcaster.settlement import Verdict

__all__ = ["DeadLetter", "Handled", "Message", "Retry"]


@dataclass(frozen=True)
class Message:
    """A message as a queue holds it: properties as pika decodes them off the wire, and the body."""

    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    exchange: str = ""
    """The exchange it was published to."""

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers (``ce-`` attributes, ``x-broadcaster-*`` failure headers)."""
        return dict(self.properties.headers or {})

    @property
    def type(self) -> str:
        """The event type: ``ce-type``, else the AMQP ``type``, else the routing key."""
        value = self.headers.get("ce-type") or self.properties.type or self.routing_key
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    @property
    def payload(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Handled:
    """One delivery to a queue of the service, and what the daemon's policy made of it."""

    queue: str
    message: Message
    attempt: int
    """The delivery's last attempt (an ordered event is retried in place)."""
    outcome: Outcome
    verdict: Verdict

    @property
    def envelope(self) -> Envelope | None:
        """The decoded envelope (None when the message could not be decoded)."""
        return self.outcome.envelope

    @property
    def type(self) -> str:
        return self.message.type


@dataclass(frozen=True)
class Retry:
    """A failed delivery scheduled again after `delay` seconds (recorded, never slept)."""

    type: str
    id: str | None
    """The envelope id (the same on every attempt)."""
    attempt: int
    """The attempt that failed; the retry is attempt + 1."""
    delay: float
    queue: str
    """The delay queue the copy waits in, or the partition queue of an in-place retry."""
    reason: str
    error: str
    in_place: bool
    """An ordered event: retried where it is, its partition waiting, rather than through a delay queue."""
    due: float
    """When it is delivered again, on the broker's clock (seconds since the broker started)."""


@dataclass(frozen=True)
class DeadLetter:
    """A message in the dead-letter queue, with what its failure headers say (`broadcaster.failures`)."""

    message: Message
    record: Record

    @property
    def type(self) -> str:
        return self.message.type

    @property
    def reason(self) -> str | None:
        """The ``x-broadcaster-reason`` code, a `broadcaster.failures.Reason` value."""
        return self.record.reason

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def attempts(self) -> int | None:
        return self.record.attempts

    @property
    def payload(self) -> Any:
        return self.message.payload

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

"""Capture what a block broadcasts, and deliver one event as the daemon would.

- `capture_broadcasts()` records what a block of code broadcasts (after commit, as in
  production) instead of sending it to RabbitMQ.
- `deliver()` hands one event to this process's subscriptions as the daemon's dispatch
  does: decoding, version check, upcasting, validation, loop prevention, inbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, OutboundMessage, properties_for
from broadcaster.exceptions import RejectedMessage
from broadcaster.payload import dump
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.transport import use_transport

__all__ = ["Capture", "CapturedEvent", "capture_broadcasts", "deliver"]


@dataclass(frozen=True)
class CapturedEvent:
    """One event as it would have reached the broker."""

    envelope: Envelope
    body: bytes

    @property
    def type(self) -> str:
        """The event type (routing key)."""
        return self.envelope.type

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as the JSON a consumer receives."""
        data: dict[str, Any] = json.loads(self.body)
        return data


class Capture(list[CapturedEvent]):
    """The events a block broadcast, in order; also an in-memory transport."""

    def of_type(self, event: str) -> list[CapturedEvent]:
        """The captured events of one type."""
        return [captured for captured in self if captured.type == event]

    @property
    def types(self) -> list[str]:
        """The type of every captured event, in order."""
        return [captured.type for captured in self]

    # The Transport interface the publisher seam expects.

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Record `message` (called after commit)."""
        self.append(CapturedEvent(message.envelope, message.body))

    def flush(self, timeout: float | None = None) -> None:
        """Nothing waits for a broker here."""

    def ensure_room(self) -> None:
        """A capture is never full."""

    def close(self, timeout: float | None = None) -> None:
        """Nothing to close."""

    @property
    def pending(self) -> int:
        """Always 0: captured events are never in flight."""
        return 0


@contextmanager
def capture_broadcasts() -> Iterator[Capture]:
    """Record instead of publish, within the block (also in outbox mode)."""
    capture = Capture()
    with use_transport(capture):
        yield capture


def deliver(
    event: str,
    payload: BaseModel | dict[str, Any] | bytes,
    *,
    source: str = "tests",
    schema_version: str | None = None,
    envelope: Envelope | None = None,
    attempt: int = 1,
    raise_errors: bool = True,
) -> Outcome:
    """Deliver one event to this process's subscriptions as the daemon would.

    `payload` is a schema instance (sent by alias, as the producer sends it), a dict
    already in the wire form (keys are the aliases), or the body as bytes.
    A receiver's exception is raised again, and a message the daemon would dead-letter
    raises RejectedMessage, unless `raise_errors` is false: then the Outcome tells.
    """
    envelope = envelope or Envelope.new(source=source, type=event, schema_version=schema_version)
    outcome = dispatch(
        properties_for(envelope),
        _body(payload),
        settings=get_settings(),
        subscriptions=subscriptions(),
        attempt=attempt,
    )
    if raise_errors and outcome.error is not None:
        raise outcome.error
    if raise_errors and outcome.action is Action.DEAD_LETTER:
        raise RejectedMessage(outcome.reason, outcome.detail)
    return outcome


def _body(payload: BaseModel | dict[str, Any] | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return dump(payload)
    return json.dumps(payload, default=str).encode()

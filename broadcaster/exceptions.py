"""Every error the library raises, in two branches: worth retrying, and never going to succeed.

BroadcasterError
 +-- TransientError               worth retrying: the same call may succeed once the broker is back
 |    +-- BrokerUnavailable       the broker cannot be reached, or the connection to it was lost
 |    +-- PublishError            the broker has not taken a message (yet)
 |         +-- PublishBufferFull  the publisher's buffer stayed full for PUBLISH_TIMEOUT
 |         +-- FlushTimeout       flush() ran out of time with messages unconfirmed
 +-- PermanentError               never succeeds as it is: fix the code, settings, message or broker setup
      +-- ConfigurationError      a BROADCASTER setting is wrong (also a system check)
      +-- RegistrationError       broadcast()/subscribe() called with conflicting arguments
      +-- InvalidPayload          send(): the signal's kwargs do not fit the event's schema
      +-- MessageTooLarge         send(): the payload is larger than MAX_MESSAGE_BYTES
      +-- HopLimitExceeded        send(): a causation chain is longer than MAX_HOPS
      +-- RejectedMessage         an incoming message can never succeed; it is dead-lettered
      +-- ContractError           the event contract cannot be built or a snapshot read
      +-- QueueNotFound           an operator tool needs a queue the broker does not have
      +-- BrokerRefused           the broker is there and says no: access refused, a missing exchange
      +-- Unroutable              a message has no route: no event type, or no queue bound for it
"""

from __future__ import annotations

import pika.exceptions

__all__ = [
    "CONNECTION_LOST",
    "BroadcasterError",
    "BrokerRefused",
    "BrokerUnavailable",
    "ConfigurationError",
    "ContractError",
    "FlushTimeout",
    "HopLimitExceeded",
    "InvalidPayload",
    "MessageTooLarge",
    "PermanentError",
    "PublishBufferFull",
    "PublishError",
    "QueueNotFound",
    "RegistrationError",
    "RejectedMessage",
    "TransientError",
    "Unroutable",
]

# pika's errors that mean the connection or its channel is gone, so reconnecting may
# help (the consumer reconnects; the tools raise BrokerUnavailable): connection errors,
# channel errors, and the socket's OSError. Not the rest of pika's AMQPError: a protocol
# or framing error (a body too long, a reentrant call) is a bug that a new connection
# would meet again. pika makes ChannelClosedByBroker, UnroutableError and NackError
# channel errors too: catch them first where they mean more (the broker refused access
# or a declaration; a copy no queue took; a copy the broker nacked).
CONNECTION_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    OSError,
)


class BroadcasterError(Exception):
    """Root of every error raised by django-signal-broadcaster."""


class TransientError(BroadcasterError):
    """Worth retrying: the broker is down, unreachable or slow, and the same call may succeed later."""


class PermanentError(BroadcasterError):
    """Never succeeds as it is: the code, the settings, the message or the broker's setup must change first."""


class ConfigurationError(PermanentError):
    """The BROADCASTER setting is missing or invalid."""


class RegistrationError(PermanentError):
    """A broadcast() or subscribe() call conflicts with an earlier one or is malformed."""


class InvalidPayload(PermanentError):
    """The kwargs of a broadcast signal do not validate against the event's schema."""

    def __init__(self, event: str, errors: list[str]) -> None:
        self.event = event
        self.errors = errors
        super().__init__(f"event {event!r}: payload does not match its schema: " + "; ".join(errors))


class MessageTooLarge(PermanentError):
    """A payload is larger than MAX_MESSAGE_BYTES allows."""

    def __init__(self, event: str, size: int, limit: int) -> None:
        self.event = event
        self.size = size
        self.limit = limit
        super().__init__(f"event {event!r}: payload is {size} bytes, more than MAX_MESSAGE_BYTES ({limit})")


class HopLimitExceeded(PermanentError):
    """An event caused by remote events is deeper in its causation chain than MAX_HOPS."""

    def __init__(self, event: str, hops: int, limit: int) -> None:
        self.event = event
        self.hops = hops
        self.limit = limit
        super().__init__(
            f"event {event!r} would travel {hops} hops, more than MAX_HOPS ({limit}): "
            "receivers are probably re-broadcasting each other's events in a cycle"
        )


class BrokerUnavailable(TransientError):
    """The broker cannot be reached, refused the connection, or the connection to it was lost."""


class PublishError(TransientError):
    """The broker has not taken a message (not confirmed, or nacked); trying again later may succeed."""


class PublishBufferFull(PublishError):
    """The publisher's buffer stayed full for PUBLISH_TIMEOUT seconds (broker down or blocked)."""


class FlushTimeout(PublishError):
    """flush() returned with messages the broker has not confirmed yet."""

    def __init__(self, pending: int, timeout: float) -> None:
        self.pending = pending
        self.timeout = timeout
        super().__init__(f"{pending} message(s) still unconfirmed by the broker after {timeout:g} s")


class RejectedMessage(PermanentError):
    """An incoming message that can never be handled; the consumer dead-letters it.

    `reason` is a short stable code (``not-json``, ``unknown-event`` ...) written to the
    ``x-broadcaster-reason`` header; the message text goes to ``x-broadcaster-error``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ContractError(PermanentError):
    """The contract cannot be built or read: conflicting schemas, an unreadable snapshot."""


class QueueNotFound(PermanentError):
    """A queue an operator tool needs does not exist on the broker (consume_signals declares it)."""


class BrokerRefused(PermanentError):
    """The broker is reachable and refuses what was asked: access refused, a missing exchange, a conflicting
    declaration. Asking again gets the same answer until permissions or topology change."""


class Unroutable(PermanentError):
    """A message cannot be routed: it names no event type, or no queue is bound for it (the broker returned it)."""

"""Every error the library raises.

BroadcasterError
 +-- ConfigurationError           a BROADCASTER setting is wrong (also a system check)
 +-- RegistrationError            broadcast()/subscribe() called with conflicting arguments
 +-- InvalidPayload               send(): the signal's kwargs do not fit the event's schema
 +-- MessageTooLarge              send(): the payload is larger than MAX_MESSAGE_BYTES
 +-- HopLimitExceeded             send(): a causation chain is longer than MAX_HOPS
 +-- PublishError                 worth retrying: the broker did not take the message (yet)
 |    +-- BrokerUnavailable       the broker cannot be reached
 |    +-- PublishBufferFull       the publisher's buffer stayed full for PUBLISH_TIMEOUT
 |    +-- FlushTimeout            flush() ran out of time with messages unconfirmed
 +-- RejectedMessage              an incoming message can never succeed; it is dead-lettered
 +-- QueueNotFound                an operator tool needs a queue the broker does not have
 +-- ContractError                the event contract cannot be built or a snapshot read
"""

from __future__ import annotations

__all__ = [
    "BroadcasterError",
    "BrokerUnavailable",
    "ConfigurationError",
    "ContractError",
    "FlushTimeout",
    "HopLimitExceeded",
    "InvalidPayload",
    "MessageTooLarge",
    "PublishBufferFull",
    "PublishError",
    "QueueNotFound",
    "RegistrationError",
    "RejectedMessage",
]


class BroadcasterError(Exception):
    """Root of every error raised by django-signal-broadcaster."""


class ConfigurationError(BroadcasterError):
    """The BROADCASTER setting is missing or invalid."""


class RegistrationError(BroadcasterError):
    """A broadcast() or subscribe() call conflicts with an earlier one or is malformed."""


class InvalidPayload(BroadcasterError):
    """The kwargs of a broadcast signal do not validate against the event's schema."""

    def __init__(self, event: str, errors: list[str]) -> None:
        self.event = event
        self.errors = errors
        super().__init__(f"event {event!r}: payload does not match its schema: " + "; ".join(errors))


class MessageTooLarge(BroadcasterError):
    """A payload is larger than MAX_MESSAGE_BYTES allows."""

    def __init__(self, event: str, size: int, limit: int) -> None:
        self.event = event
        self.size = size
        self.limit = limit
        super().__init__(f"event {event!r}: payload is {size} bytes, more than MAX_MESSAGE_BYTES ({limit})")


class HopLimitExceeded(BroadcasterError):
    """An event caused by remote events is deeper in its causation chain than MAX_HOPS."""

    def __init__(self, event: str, hops: int, limit: int) -> None:
        self.event = event
        self.hops = hops
        self.limit = limit
        super().__init__(
            f"event {event!r} would travel {hops} hops, more than MAX_HOPS ({limit}): "
            "receivers are probably re-broadcasting each other's events in a cycle"
        )


class PublishError(BroadcasterError):
    """The broker has not taken a message; trying again later may succeed."""


class BrokerUnavailable(PublishError):
    """The broker cannot be reached or refused the connection."""


class PublishBufferFull(PublishError):
    """The publisher's buffer stayed full for PUBLISH_TIMEOUT seconds (broker down or blocked)."""


class FlushTimeout(PublishError):
    """flush() returned with messages the broker has not confirmed yet."""

    def __init__(self, pending: int, timeout: float) -> None:
        self.pending = pending
        self.timeout = timeout
        super().__init__(f"{pending} message(s) still unconfirmed by the broker after {timeout:g} s")


class RejectedMessage(BroadcasterError):
    """An incoming message that can never be handled; the consumer dead-letters it.

    `reason` is a short stable code (``not-json``, ``unknown-event`` ...) written to the
    ``x-broadcaster-reason`` header; the message text goes to ``x-broadcaster-error``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class QueueNotFound(BroadcasterError):
    """A queue an operator tool needs does not exist on the broker (consume_signals declares it)."""


class ContractError(BroadcasterError):
    """The contract cannot be built or read: conflicting schemas, an unreadable snapshot."""

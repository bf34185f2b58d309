"""From an incoming message to local receivers: decode, verify, validate, re-emit.

No broker I/O happens here; the consumer daemon acts on the Outcome, and the test kit
can run the same path without a broker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika
from pydantic import ValidationError

from broadcaster.envelope import Envelope, IncomingMessage, decode
from broadcaster.exceptions import HopLimitExceeded, RejectedMessage
from broadcaster.registry import Subscription, handling
from broadcaster.settings import BroadcasterSettings

__all__ = ["Action", "Outcome", "dispatch"]

logger = logging.getLogger(__name__)


class Action(enum.Enum):
    """What the consumer does with a message once dispatch is done."""

    ACK = "ack"
    """The receivers ran: acknowledge."""

    RETRY = "retry"
    """A receiver raised: deliver again after a delay, or dead-letter after the last attempt."""

    DEAD_LETTER = "dead-letter"
    """The message can never succeed: dead-letter it now, without retries."""


@dataclass(frozen=True)
class Outcome:
    """The result of dispatching one message."""

    action: Action
    envelope: Envelope | None = None
    reason: str = ""
    detail: str = ""
    exception: str = ""


def dispatch(
    properties: pika.BasicProperties,
    body: bytes,
    *,
    settings: BroadcasterSettings,
    subscriptions: Mapping[str, Subscription],
    attempt: int = 1,
) -> Outcome:
    """Run the local receivers of one message and say what to do with it."""
    try:
        message, subscription = _verify(properties, body, settings, subscriptions, attempt)
        fields = _validate(subscription, message)
    except RejectedMessage as exc:
        return Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=exc.detail)
    return _emit(subscription, message.envelope, fields)


def _verify(
    properties: pika.BasicProperties,
    body: bytes,
    settings: BroadcasterSettings,
    subscriptions: Mapping[str, Subscription],
    attempt: int,
) -> tuple[IncomingMessage, Subscription]:
    if len(body) > settings.max_message_bytes:
        raise RejectedMessage(
            "too-large",
            f"{len(body)} bytes, more than MAX_MESSAGE_BYTES ({settings.max_message_bytes})",
        )
    message = decode(properties, body, attempt=attempt)
    envelope = message.envelope
    subscription = subscriptions.get(envelope.type)
    if subscription is None:
        raise RejectedMessage("unknown-event", f"no subscription for event type {envelope.type!r}")
    if envelope.hops > settings.max_hops:
        raise RejectedMessage(
            "hop-limit",
            f"event travelled {envelope.hops} hops, more than MAX_HOPS ({settings.max_hops})",
        )
    _check_version(envelope, subscription)
    return message, subscription


def _check_version(envelope: Envelope, subscription: Subscription) -> None:
    version = envelope.schema_version
    if version is None:
        return  # other CloudEvents producers do not send one: read as our current version
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) != subscription.major:
        raise RejectedMessage(
            "unsupported-schema-version",
            f"schema version {version[:20]!r} of {envelope.type!r} cannot be read by this "
            f"service (it reads major version {subscription.major})",
        )


def _validate(subscription: Subscription, message: IncomingMessage) -> dict[str, Any]:
    schema = subscription.schema
    try:
        if isinstance(message.data, bytes):
            payload = schema.model_validate_json(message.data)
        else:
            payload = schema.model_validate(message.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise RejectedMessage("not-json", f"body is not valid JSON: {errors[0]['msg']}") from exc
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(payload)'}: {e['msg']}" for e in errors[:10])
        raise RejectedMessage("schema-violation", f"{subscription.event}: {detail}") from exc
    return {name: getattr(payload, name) for name in type(payload).model_fields}


def _emit(subscription: Subscription, envelope: Envelope, fields: dict[str, Any]) -> Outcome:
    def receivers() -> None:
        with handling(subscription.signal, envelope):
            subscription.signal.send(sender=subscription.sender, envelope=envelope, **fields)

    try:
        if subscription.inbox:
            from broadcaster import inbox  # noqa: PLC0415 - models load only once apps are ready

            inbox.run_once(envelope, receivers)
        else:
            receivers()
    except HopLimitExceeded as exc:
        # Retrying a cycle only repeats it.
        return Outcome(Action.DEAD_LETTER, envelope, "hop-limit", str(exc), type(exc).__qualname__)
    except Exception as exc:
        logger.warning(
            "receiver failed for %s %s (attempt %d): %s: %s",
            envelope.type,
            envelope.id,
            envelope.attempt,
            type(exc).__qualname__,
            exc,
            exc_info=True,
        )
        return Outcome(Action.RETRY, envelope, "receiver-error", str(exc), _qualified(type(exc)))
    return Outcome(Action.ACK, envelope)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

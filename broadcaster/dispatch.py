"""From an incoming message to local receivers: decode, verify, validate, re-emit.

No broker I/O happens here; the consumer daemon acts on the Outcome, and the test kit
can run the same path without a broker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika
from django.dispatch import Signal
from pydantic import ValidationError

from broadcaster import failures, jsondepth, observability, signing
from broadcaster.envelope import Envelope, IncomingMessage, decode, exact_json
from broadcaster.exceptions import HopLimitExceeded, RejectedMessage
from broadcaster.failures import Reason
from broadcaster.payload import field_value, schema_major
from broadcaster.settings import BroadcasterSettings

if TYPE_CHECKING:
    from broadcaster.registry import Subscription

__all__ = ["Action", "Outcome", "current_envelope", "dispatch", "handling", "re_emitting"]

re_emitting: ContextVar[tuple[Signal, Envelope] | None] = ContextVar("broadcaster_handling", default=None)
"""(the signal being re-emitted, the envelope of the remote event) while its receivers run.

The producer reads it on every send(): a broadcast of that very re-emission is not
published again (it would loop), and any other event fired meanwhile has it as its cause.
"""

logger = logging.getLogger(__name__)

_DETAIL_LIMIT = 1000


class Action(enum.Enum):
    """What the consumer does with a message once dispatch is done."""

    ACK = "ack"
    """The receivers ran: acknowledge."""

    RETRY = "retry"
    """A receiver raised: deliver again after a delay, or dead-letter after the last attempt."""

    DEAD_LETTER = "dead-letter"
    """The message can never succeed: dead-letter it now, without retries."""


@dataclass(slots=True, unsafe_hash=True)
class Outcome:
    """The result of dispatching one message (not changed once made, and hashable as before).

    Not frozen: one is made for every message, and a frozen dataclass's __init__ costs
    about four times as much.
    """

    action: Action
    envelope: Envelope | None = None
    reason: str = ""
    detail: str = ""
    exception: str = ""
    error: BaseException | None = field(default=None, compare=False, repr=False)
    skipped: bool = False
    """Acknowledged without running the receivers: the stale-event guard had a newer version."""


def dispatch(
    properties: pika.BasicProperties,
    body: bytes,
    *,
    settings: BroadcasterSettings,
    subscriptions: Mapping[str, Subscription],
    attempt: int = 1,
) -> Outcome:
    """Run the local receivers of one message and say what to do with it; never raises.

    Receivers that raise mean a retry. Anything else that raises on the way to them (a
    schema's own validator, an upcaster, a decoding path nobody foresaw) can only fail
    again on the next attempt: the message is dead-lettered as ``internal-error`` with
    the exception's type and message.
    """
    try:
        message, subscription = _verify(properties, body, settings, subscriptions, attempt)
        jsondepth.check(message.data, settings.max_json_depth)
        fields = _validate(subscription, message)
    except RejectedMessage as exc:
        return Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=exc.detail)
    except Exception as exc:  # nothing a message carries may escape to the daemon
        logger.warning("could not read a message: %s: %s", type(exc).__qualname__, exc, exc_info=True)
        return Outcome(
            Action.DEAD_LETTER,
            reason=Reason.INTERNAL_ERROR,
            detail=f"{type(exc).__qualname__}: {exc}"[:_DETAIL_LIMIT],
            exception=_qualified(type(exc)),
        )
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
            Reason.TOO_LARGE,
            f"{len(body)} bytes, more than MAX_MESSAGE_BYTES ({settings.max_message_bytes})",
        )
    signer = signing.verify(properties, body, settings) if settings.require_signatures else None
    message = decode(properties, body, attempt=attempt)
    envelope = message.envelope
    if signer is not None and signer != envelope.source:
        # A structured event carries its source in the body: the key must be that source's.
        raise RejectedMessage(
            Reason.BAD_SIGNATURE,
            f"signed with a key of {signer[:40]!r}, but the event's source is {envelope.source[:40]!r}",
        )
    if settings.require_user_id:
        _check_publisher(properties, body, settings, envelope)
    subscription = subscriptions.get(envelope.type)
    if subscription is None:
        raise RejectedMessage(Reason.UNKNOWN_EVENT, f"no subscription for event type {envelope.type!r}")
    if subscription.sources is not None and envelope.source not in subscription.sources:
        raise RejectedMessage(
            Reason.UNEXPECTED_SOURCE,
            f"{envelope.type!r} is accepted only from {', '.join(sorted(subscription.sources))}, "
            f"not from {envelope.source[:40]!r}",
        )
    if envelope.hops > settings.max_hops:
        raise RejectedMessage(
            Reason.HOP_LIMIT,
            f"event travelled {envelope.hops} hops, more than MAX_HOPS ({settings.max_hops})",
        )
    return message, subscription


def _check_publisher(
    properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings, envelope: Envelope
) -> None:
    """REQUIRE_USER_ID: the broker user that first published the event must be its source.

    On a copy this service sealed (a retry, a dead letter, a replay) that user is the
    sealed one; on anything else it is the message's own broker-validated user_id.
    """
    user = failures.publisher(properties, body, settings)
    if user != envelope.source:
        published = "without a broker-validated user_id" if user is None else f"by broker user {user[:40]!r}"
        raise RejectedMessage(
            Reason.USER_MISMATCH,
            f"ce-source {envelope.source[:40]!r} needs broker user {envelope.source[:40]!r}; "
            f"it was published {published}",
        )


def _readable_major(envelope: Envelope, subscription: Subscription) -> int:
    """The payload's major version, if this subscription can read it; else RejectedMessage."""
    version, ours = envelope.schema_version, subscription.major
    if version is None:
        return ours  # other CloudEvents producers send none: read as ours
    major = schema_major(version)
    if major == ours:
        return major
    missing = [] if major is None else [k for k in range(major, ours) if k not in subscription.upcasters]
    if major is None or major > ours or missing:
        why = f"no upcaster from major version {missing[0]}" if missing else f"it reads major {ours}"
        raise RejectedMessage(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema version {version[:20]!r} of {envelope.type!r} cannot be read by this service ({why})",
        )
    return major


def _validate(subscription: Subscription, message: IncomingMessage) -> dict[str, Any]:
    schema = subscription.schema
    major = _readable_major(message.envelope, subscription)
    try:
        if major < subscription.major:
            payload = schema.model_validate(_upcast(subscription, major, message.data))
        elif isinstance(message.data, bytes) and not subscription.lossless:
            payload = schema.model_validate_json(message.data)
        else:
            # pydantic's JSON parser reads every number as a float; a Decimal field must
            # see the digits that were sent.
            payload = schema.model_validate(_parse(message.data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise RejectedMessage(Reason.NOT_JSON, f"body is not valid JSON: {errors[0]['msg']}") from exc
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(payload)'}: {e['msg']}" for e in errors[:10])
        raise RejectedMessage(Reason.SCHEMA_VIOLATION, f"{subscription.event}: {detail}") from exc
    # A validator may hand back a subclass of the schema: its fields, then.
    names = subscription.field_names if type(payload) is schema else tuple(type(payload).model_fields)
    return {name: getattr(payload, name) for name in names}


def _parse(data: bytes | object) -> object:
    """The payload as Python values, numbers with a fraction as exact Decimals."""
    if not isinstance(data, bytes):
        return data
    try:
        return exact_json(data)
    except (ValueError, RecursionError) as exc:
        raise RejectedMessage(Reason.NOT_JSON, f"body is not valid JSON: {exc}") from exc
    except ArithmeticError as exc:  # decimal.InvalidOperation: an exponent past what Decimal holds
        raise RejectedMessage(Reason.NOT_JSON, "body has a number too large to represent") from exc


def _upcast(subscription: Subscription, major: int, data: bytes | object) -> object:
    """Bring an older payload up to the subscription's major, one upcaster at a time."""
    data = _parse(data)
    for version in range(major, subscription.major):
        if not isinstance(data, dict):
            raise RejectedMessage(
                Reason.SCHEMA_VIOLATION, f"{subscription.event}: a v{version} payload is not an object"
            )
        try:
            data = subscription.upcasters[version](data)
        except Exception as exc:
            # An upcaster that fails on this payload fails on every retry too.
            raise RejectedMessage(
                Reason.UPCAST_FAILED, f"upcaster from v{version} raised {type(exc).__qualname__}: {exc}"
            ) from exc
    return data


def _emit(subscription: Subscription, envelope: Envelope, fields: dict[str, Any]) -> Outcome:
    def receivers() -> None:
        with handling(subscription.signal, envelope), observability.receiving(envelope):
            subscription.signal.send(sender=subscription.sender, envelope=envelope, **fields)

    applied = True

    def guarded() -> None:
        nonlocal applied
        if subscription.version_field is None:
            receivers()
            return
        from broadcaster import versions  # noqa: PLC0415 - models load only once apps are ready

        version = field_value(fields, subscription.version_field)
        applied = versions.run_if_newer(envelope, version, receivers)

    try:
        if subscription.inbox:
            from broadcaster import inbox  # noqa: PLC0415 - models load only once apps are ready

            inbox.run_once(envelope, guarded)
        else:
            guarded()
    except RejectedMessage as exc:  # a version the guard cannot compare
        return Outcome(Action.DEAD_LETTER, envelope, exc.reason, exc.detail)
    except HopLimitExceeded as exc:
        # Retrying a cycle only repeats it.
        return Outcome(Action.DEAD_LETTER, envelope, Reason.HOP_LIMIT, str(exc), _qualified(type(exc)))
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
        return Outcome(Action.RETRY, envelope, Reason.RECEIVER_ERROR, str(exc), _qualified(type(exc)), exc)
    return Outcome(Action.ACK, envelope, skipped=not applied)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def current_envelope() -> Envelope | None:
    """The envelope of the remote event being handled on this thread (or task), if any."""
    current = re_emitting.get()
    return current[1] if current else None


def handling(signal: Signal, envelope: Envelope) -> AbstractContextManager[None]:
    """Mark `signal` as re-emitting the remote event of `envelope` for the block."""
    return _Handling(signal, envelope)


class _Handling:
    # A class rather than @contextmanager: it runs for every event the daemon handles.
    __slots__ = ("_current", "_token")

    def __init__(self, signal: Signal, envelope: Envelope) -> None:
        self._current = (signal, envelope)

    def __enter__(self) -> None:
        self._token = re_emitting.set(self._current)

    def __exit__(self, *exc_info: object) -> None:
        re_emitting.reset(self._token)

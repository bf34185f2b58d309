"""The failure headers: what a retried, dead-lettered or replayed copy says, and who may believe it.

Every ``x-broadcaster-*`` header is written and read here. They record why a message
failed (for operators) and carry what must survive a retry, a dead letter and a replay:
the attempt count and the broker user that first published the message.

A publisher can set any header, so these are believed only on a copy this service put
back itself, which two things prove together: the broker-validated ``user_id`` is this
service's own broker user, and ``x-broadcaster-seal`` is an HMAC-SHA256, under a key
only this service holds, over the failure headers, the ``ce-`` attributes, the content
type and a digest of the body. A message that fails either test is a first delivery:
its ``x-broadcaster-*`` headers are ignored, stripped from any copy made of it, and its
publisher is its own ``user_id``. That covers messages the broker dead-lettered itself
(a quorum queue's delivery limit) too: they keep their original ``user_id`` and no seal.

The key is derived from Django's ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still verify)
with a salt naming the library and ``SERVICE_NAME``, or from ``SEAL_KEYS`` when set.
Every instance of a service and its ``dead_letters`` tool must share it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeGuard

import pika
from django.conf import settings as django_settings
from django.utils.crypto import salted_hmac

from broadcaster.settings import BroadcasterSettings

__all__ = [
    "KEPT_PROPERTIES",
    "Reason",
    "Record",
    "State",
    "attempt",
    "failure_properties",
    "is_internal",
    "publisher",
    "read",
    "replay_properties",
    "trusted_state",
]

PREFIX = "x-broadcaster-"
ATTEMPT = PREFIX + "attempt"
"""The attempt number the next delivery has (1 is the first delivery)."""
ATTEMPTS = PREFIX + "attempts"
"""Deliveries that failed so far."""
REASON = PREFIX + "reason"
ERROR = PREFIX + "error"
EXCEPTION = PREFIX + "exception"
QUEUE = PREFIX + "queue"
ROUTING_KEY = PREFIX + "routing-key"
FIRST_FAILURE = PREFIX + "first-failure"
LAST_FAILURE = PREFIX + "last-failure"
PUBLISHER = PREFIX + "user-id"
"""The broker user that first published the message; absent if it had no user_id."""
SEAL = PREFIX + "seal"

ERROR_TEXT_LIMIT = 1000
SEAL_SCHEME = "v1"
# Headers the broker writes when it dead-letters a message; a replay starts afresh without them.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_SALT = "broadcaster.failures.seal:"

KEPT_PROPERTIES = (
    "content_type",
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
    "cluster_id",
)
"""The AMQP properties a retried, dead-lettered or replayed copy keeps from the original.

Left out, each for a reason: ``headers`` are rewritten here; ``user_id`` becomes the
copying connection's (the broker refuses any other); ``delivery_mode`` is always 2,
because a copy waiting in a retry or dead-letter queue must survive a broker restart
even when the original was transient; ``expiration`` is dropped, because a dead letter
that expired would vanish unseen, and a retry's delay is its queue's TTL.
"""


class Reason(StrEnum):
    """Why a message was dead-lettered: the code in ``x-broadcaster-reason``."""

    NOT_JSON = "not-json"
    """The body (or a structured event) is not valid JSON, or ``data_base64`` is not base64."""
    CONTENT_TYPE = "content-type"
    """The content type is not JSON (for example a pickle); the body is never parsed."""
    BAD_ATTRIBUTE = "bad-attribute"
    """A CloudEvents attribute is missing or malformed (``ce-id``, ``ce-source``, ``ce-type``,
    ``ce-specversion`` other than 1.0, ``ce-time``, ``ce-hops``, a non-UTF-8 header), or, on a
    signed message, duplicated or holding a control character."""
    TOO_LARGE = "too-large"
    """The body is larger than ``MAX_MESSAGE_BYTES``."""
    TOO_DEEP = "too-deep"
    """The JSON nests arrays and objects deeper than ``MAX_JSON_DEPTH``; found by a scan, before any parser."""
    UNSIGNED = "unsigned"
    """``REQUIRE_SIGNATURES`` is on and the message carries no signature."""
    UNKNOWN_KEY = "unknown-key"
    """The signature's key id is not in ``SIGNING_KEYS`` for the event's ``ce-source``."""
    BAD_SIGNATURE = "bad-signature"
    """The body or an attribute changed after signing, another key signed it, or the signature's
    scheme is not one this service verifies."""
    USER_MISMATCH = "user-mismatch"
    """``REQUIRE_USER_ID`` is on and the broker user that published the event is not its ``ce-source``."""
    UNEXPECTED_SOURCE = "unexpected-source"
    """The subscription names its ``sources`` and the event's ``ce-source`` is not one of them."""
    UNKNOWN_EVENT = "unknown-event"
    """This service has no subscription for the event type (a stale binding, or a replayed message)."""
    HOP_LIMIT = "hop-limit"
    """The causation chain is longer than ``MAX_HOPS``: receivers broadcast each other's events in a cycle."""
    UNSUPPORTED_SCHEMA_VERSION = "unsupported-schema-version"
    """A newer major version than the subscription reads, or an older one without an upcaster."""
    UPCAST_FAILED = "upcast-failed"
    """An upcaster raised on the payload."""
    SCHEMA_VIOLATION = "schema-violation"
    """The payload does not validate against the subscription's schema."""
    RECEIVER_ERROR = "receiver-error"
    """A receiver raised on every attempt (``RETRY_DELAYS`` plus one); the last exception is kept."""
    INTERNAL_ERROR = "internal-error"
    """An exception nobody foresaw while handling the message."""
    UNDECODABLE = "undecodable"
    """pika could not decode the message's properties."""


@dataclass(frozen=True, slots=True)
class State:
    """What a sealed copy carries through retries, dead letters and replays."""

    attempt: int
    """The delivery this is, 1 for the first (a replay starts again at 1)."""
    publisher: str | None
    """The broker-validated user that first published the message, None if it set no user_id."""


@dataclass(frozen=True, slots=True)
class Record:
    """What the failure headers of a dead letter say; None where unknown or not to be believed."""

    reason: str | None
    error: str | None
    exception: str | None
    attempts: int | None
    routing_key: str | None
    failed_at: datetime | None
    """The last failure, or the time the broker dead-lettered the message itself."""


def is_internal(name: object) -> bool:
    """True for a header name of ours (``x-broadcaster-*``, in any case)."""
    text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
    return text.lower().startswith(PREFIX)


def trusted_state(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> State | None:
    """The sealed state of a copy this service put back itself, or None for anything else.

    None means a first delivery as far as anyone may tell: attempt 1, published by its
    own ``user_id``.
    """
    ours = _verified(properties, body, settings)
    if ours is None:
        return None
    attempt = ours.get(ATTEMPT)
    if not _is_integer(attempt) or attempt < 1:
        return None
    publisher = ours.get(PUBLISHER)
    return State(attempt, publisher if isinstance(publisher, str) else None)


def publisher(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> str | None:
    """The broker-validated user that first published this message (None: it set no user_id)."""
    state = trusted_state(properties, body, settings)
    if state is not None:
        return state.publisher
    user: str | None = properties.user_id
    return user


def attempt(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> int:
    """The delivery this is: the sealed attempt count, else 1."""
    state = trusted_state(properties, body, settings)
    return 1 if state is None else state.attempt


def failure_properties(
    properties: pika.BasicProperties,
    body: bytes,
    settings: BroadcasterSettings,
    *,
    attempt: int,
    reason: str,
    error: str,
    exception: str,
    queue: str,
    routing_key: str,
    now: datetime | None = None,
    notes: Mapping[str, str] | None = None,
) -> pika.BasicProperties:
    """The properties of the copy of a failed delivery, for a retry or the dead-letter queue.

    `attempt` is the delivery that failed, `queue` the queue it was consumed from and
    `routing_key` the one it arrived with. Failure headers of a copy this service sealed
    carry over (the first failure, the original routing key and publisher); any other
    ``x-broadcaster-*`` header is dropped. The copy is published as this service's
    broker user and sealed. `notes` (``x-broadcaster-*`` names) say what had to change
    in the headers for the copy to be encodable (`broadcaster.properties`); they are sealed too.
    """
    previous = _verified(properties, body, settings)
    at = (now or datetime.now(UTC)).isoformat()
    first = previous.get(FIRST_FAILURE) if previous is not None else None
    original_key = previous.get(ROUTING_KEY) if previous is not None else None
    failure: dict[str, object] = {
        ATTEMPT: attempt + 1,
        ATTEMPTS: attempt,
        REASON: str(reason),
        # Text from a hostile message may hold lone surrogates, which no header can carry.
        ERROR: error[:ERROR_TEXT_LIMIT].encode("utf-8", "backslashreplace").decode("utf-8"),
        EXCEPTION: exception,
        QUEUE: queue,
        ROUTING_KEY: original_key if isinstance(original_key, str) else routing_key,
        FIRST_FAILURE: first if isinstance(first, str) else at,
        LAST_FAILURE: at,
        **(notes or {}),
    }
    return _sealed(properties, body, settings, _origin(previous, properties), failure, keep_broker_headers=True)


def replay_properties(
    properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings
) -> pika.BasicProperties:
    """The properties of a dead letter sent back to the service queue, to start again at attempt 1.

    The copy keeps the ``ce-`` headers (the envelope id among them), loses the failure
    headers ours and the broker's, keeps the original publisher and routing key when the
    dead letter was sealed (else takes its ``user_id`` as the publisher), and is
    published as this service's user, sealed.
    """
    previous = _verified(properties, body, settings)
    fresh: dict[str, object] = {ATTEMPT: 1}
    if previous is not None and isinstance(previous.get(ROUTING_KEY), str):
        fresh[ROUTING_KEY] = previous[ROUTING_KEY]  # what it first arrived with, for the next dead letter
    return _sealed(properties, body, settings, _origin(previous, properties), fresh, keep_broker_headers=False)


def read(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> Record:
    """What the failure headers say about why this message failed.

    Our headers count only on a sealed copy; a message the broker dead-lettered itself
    is described from its ``x-death`` header.
    """
    headers = properties.headers or {}
    ours = _verified(properties, body, settings) or {}
    death = _first_death(headers)
    attempts = ours.get(ATTEMPTS)
    return Record(
        reason=_text(ours.get(REASON)) or _text(death.get("reason")),
        error=_text(ours.get(ERROR)),
        exception=_text(ours.get(EXCEPTION)),
        attempts=attempts if _is_integer(attempts) else None,
        routing_key=_text(ours.get(ROUTING_KEY)),
        failed_at=_time(ours.get(LAST_FAILURE)) or _time(death.get("time")),
    )


def _origin(previous: Mapping[str, object] | None, properties: pika.BasicProperties) -> dict[str, object]:
    # The first publisher: carried by a sealed copy, else the message's own broker-checked user_id.
    first = previous.get(PUBLISHER) if previous is not None else properties.user_id
    return {PUBLISHER: first} if isinstance(first, str) and first else {}


def _sealed(
    properties: pika.BasicProperties,
    body: bytes,
    settings: BroadcasterSettings,
    origin: Mapping[str, object],
    failure: Mapping[str, object],
    *,
    keep_broker_headers: bool,
) -> pika.BasicProperties:
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if not is_internal(name) and (keep_broker_headers or not _is_broker_header(name))
    }
    ours = {**failure, **origin}
    ours[SEAL] = _seal(_secrets(settings)[0], settings, _sealed_text(properties.content_type, headers, ours, body))
    kept = {name: getattr(properties, name) for name in KEPT_PROPERTIES}
    return pika.BasicProperties(headers={**headers, **ours}, delivery_mode=2, user_id=settings.broker_user, **kept)


def _verified(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> dict[str, object] | None:
    """Our headers of a copy this service sealed, or None if the message is not one."""
    headers = properties.headers or {}
    seal = headers.get(SEAL)
    if not isinstance(seal, str):
        return None  # a first delivery: the cheapest test, done for every message
    if properties.user_id != settings.broker_user:
        return None  # the broker-validated half of the proof
    ours = {str(name): value for name, value in headers.items() if is_internal(name) and name != SEAL}
    if not all(isinstance(value, str) or _is_integer(value) for value in ours.values()):
        return None
    seal_bytes = seal.encode("utf-8", "surrogatepass")
    text = _sealed_text(properties.content_type, headers, ours, body)
    for secret in _secrets(settings):
        if hmac.compare_digest(_seal(secret, settings, text).encode(), seal_bytes):
            return ours
    return None


def _sealed_text(
    content_type: str | None, headers: Mapping[Any, object], ours: Mapping[str, object], body: bytes
) -> str:
    """What the seal signs: our headers bound to this very message.

    That is its ce- attributes, its content type and its body. Values are what pika
    hands back after a round trip (str and int, and bytes in ce- values), so the repr()
    of each comes out the same on every delivery of the copy.
    """
    attributes = sorted(
        [repr(name), repr(value)] for name, value in headers.items() if _name(name).lower().startswith("ce-")
    )
    own = sorted([name, repr(value)] for name, value in ours.items() if name != SEAL)
    # repr(): a content type that is not UTF-8 arrives from pika as bytes.
    document = [SEAL_SCHEME, repr(content_type), hashlib.sha256(body).hexdigest(), attributes, own]
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def _seal(secret: str | bytes, settings: BroadcasterSettings, text: str) -> str:
    # The salt names the service: two services never share a sealing key, even with one SECRET_KEY.
    digest = salted_hmac(_SALT + settings.service_name, text, secret=secret, algorithm="sha256").hexdigest()
    return f"{SEAL_SCHEME}:{digest}"


def _secrets(settings: BroadcasterSettings) -> list[str | bytes]:
    """The keys that verify a seal; the first one seals."""
    if settings.seal_keys:
        return [key.get_secret_value() for key in settings.seal_keys]
    return [django_settings.SECRET_KEY, *getattr(django_settings, "SECRET_KEY_FALLBACKS", [])]


def _name(name: object) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else str(name)


def _is_broker_header(name: object) -> bool:
    return _name(name).lower().startswith(_BROKER_HEADERS)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    # Set by the broker when it dead-lettered the message itself (a quorum queue's
    # delivery limit), where our own headers are missing.
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _time(value: object) -> datetime | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    # pika decodes AMQP timestamps as naive datetimes in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)

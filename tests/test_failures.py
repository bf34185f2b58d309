"""The failure headers: believed only on a copy this service sealed, stripped from anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pytest

from broadcaster import failures
from broadcaster.failures import State
from broadcaster.settings import BroadcasterSettings

BODY = b'{"n": 1}'
SERVICE = BroadcasterSettings.model_validate({"SERVICE_NAME": "billing", "BROKER_URL": "amqp://billing:pw@h/%2F"})
CE = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "orders", "ce-type": "orders.placed"}
FORGED = {
    "x-broadcaster-user-id": "orders",
    "x-broadcaster-attempt": 9,
    "x-broadcaster-attempts": 8,
    "x-broadcaster-first-failure": "1999-01-01T00:00:00+00:00",
    "x-broadcaster-routing-key": "forged.key",
    "x-broadcaster-reason": "schema-violation",
    "x-broadcaster-seal": "v1:" + "0" * 64,
    "X-Broadcaster-Queue": "elsewhere",
}


def wire(properties: pika.BasicProperties) -> pika.BasicProperties:
    """What the next consumer reads: the properties through pika's encoding and decoding."""
    decoded = pika.BasicProperties()
    decoded.decode(b"".join(properties.encode()))
    return decoded


def published(user_id: str | None = "orders", **headers: Any) -> pika.BasicProperties:
    """A first delivery as a publisher sent it, with the broker-checked `user_id`."""
    return wire(
        pika.BasicProperties(content_type="application/json", user_id=user_id, headers={**CE, **headers}, priority=3)
    )


def failed(properties: pika.BasicProperties, attempt: int, settings: BroadcasterSettings = SERVICE) -> Any:
    """The retry copy this service's consumer makes of a failed delivery, as the next delivery reads it."""
    copy = failures.failure_properties(
        properties,
        BODY,
        settings,
        attempt=attempt,
        reason=failures.Reason.RECEIVER_ERROR,
        error="boom",
        exception="builtins.RuntimeError",
        queue="billing",
        routing_key="orders.placed" if attempt == 1 else "billing",
    )
    return wire(copy)


@pytest.mark.parametrize("user_id", [None, "orders", "billing"])
def test_forged_failure_headers_on_a_first_delivery_are_not_believed(user_id: str | None) -> None:
    message = published(user_id, **FORGED)
    assert failures.trusted_state(message, BODY, SERVICE) is None
    assert failures.attempt(message, BODY, SERVICE) == 1
    assert failures.publisher(message, BODY, SERVICE) == user_id  # its own user_id, never the forged header
    record = failures.read(message, BODY, SERVICE)
    assert (record.reason, record.attempts, record.routing_key) == (None, None, None)


def test_forged_headers_are_stripped_from_the_copy_and_replaced_by_the_truth() -> None:
    copy = failed(published(None, **FORGED), attempt=1)
    headers = copy.headers
    assert "x-broadcaster-user-id" not in headers  # it had no user_id: nobody vouches for a publisher
    assert "X-Broadcaster-Queue" not in headers
    assert (headers["x-broadcaster-attempt"], headers["x-broadcaster-attempts"]) == (2, 1)
    assert headers["x-broadcaster-routing-key"] == "orders.placed"
    assert datetime.fromisoformat(headers["x-broadcaster-first-failure"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert copy.user_id == "billing"
    assert failures.trusted_state(copy, BODY, SERVICE) == State(attempt=2, publisher=None)


def test_a_genuine_event_keeps_its_publisher_through_every_retry_and_replay() -> None:
    message = published("orders")
    first_failure = None
    for attempt in range(1, 5):
        message = failed(message, attempt)
        assert failures.trusted_state(message, BODY, SERVICE) == State(attempt=attempt + 1, publisher="orders")
        first_failure = first_failure or message.headers["x-broadcaster-first-failure"]
        assert message.headers["x-broadcaster-first-failure"] == first_failure
        assert message.headers["x-broadcaster-routing-key"] == "orders.placed"
    replayed = wire(failures.replay_properties(message, BODY, SERVICE))
    assert failures.trusted_state(replayed, BODY, SERVICE) == State(attempt=1, publisher="orders")
    again = failed(replayed, attempt=1)
    assert failures.trusted_state(again, BODY, SERVICE) == State(attempt=2, publisher="orders")


CHANGES = {
    "attempt": lambda p: _with_headers(p, {"x-broadcaster-attempt": 5}),
    "publisher": lambda p: _with_headers(p, {"x-broadcaster-user-id": "payments"}),
    "publisher removed": lambda p: _with_headers(p, {}, drop="x-broadcaster-user-id"),
    "a header of ours added": lambda p: _with_headers(p, {"x-broadcaster-extra": "1"}),
    "envelope id": lambda p: _with_headers(p, {"ce-id": "e-2"}),
    "source": lambda p: _with_headers(p, {"ce-source": "payments"}),
    "attribute added": lambda p: _with_headers(p, {"ce-subject": "x"}),
    "content type": lambda p: pika.BasicProperties(**{**vars(p), "content_type": "text/json"}),
    "user_id": lambda p: pika.BasicProperties(**{**vars(p), "user_id": "payments"}),
    "seal": lambda p: _with_headers(p, {"x-broadcaster-seal": p.headers["x-broadcaster-seal"].upper()}),
}


def _with_headers(properties: pika.BasicProperties, changes: dict[str, Any], drop: str = "") -> Any:
    headers = {name: value for name, value in properties.headers.items() if name != drop}
    return pika.BasicProperties(**{**vars(properties), "headers": {**headers, **changes}})


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_to_a_sealed_copy_voids_it(change: Any) -> None:
    copy = failed(published("orders"), attempt=1)
    assert failures.trusted_state(copy, BODY, SERVICE) is not None
    assert failures.trusted_state(wire(change(copy)), BODY, SERVICE) is None


def test_a_changed_body_voids_the_seal() -> None:
    copy = failed(published("orders"), attempt=1)
    assert failures.trusted_state(copy, b'{"n": 2}', SERVICE) is None


def test_another_service_with_the_same_secret_key_cannot_seal_for_this_one() -> None:
    other = BroadcasterSettings.model_validate({"SERVICE_NAME": "payments", "BROKER_URL": "amqp://billing:pw@h/%2F"})
    copy = failed(published("orders"), attempt=1, settings=other)  # same user, same SECRET_KEY, other service
    assert failures.trusted_state(copy, BODY, other) is not None
    assert failures.trusted_state(copy, BODY, SERVICE) is None


def _keyed(*keys: str) -> BroadcasterSettings:
    return BroadcasterSettings.model_validate({**SERVICE.model_dump(by_alias=True), "SEAL_KEYS": keys})


def test_seal_keys_rotate_the_first_seals_all_verify() -> None:
    copy = failed(published("orders"), attempt=1, settings=_keyed("old"))
    assert failures.trusted_state(copy, BODY, _keyed("new", "old")) == State(2, "orders")
    assert failures.trusted_state(copy, BODY, _keyed("new")) is None
    assert failures.trusted_state(copy, BODY, SERVICE) is None  # SECRET_KEY is not the key any more
    resealed = failed(copy, attempt=2, settings=_keyed("new", "old"))
    assert failures.trusted_state(resealed, BODY, _keyed("new")) == State(3, "orders")


def test_secret_key_fallbacks_verify_while_secret_key_rotates(settings: Any) -> None:
    copy = failed(published("orders"), attempt=1)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "rotated", ["tests"]
    assert failures.trusted_state(copy, BODY, SERVICE) == State(2, "orders")
    settings.SECRET_KEY_FALLBACKS = []
    assert failures.trusted_state(copy, BODY, SERVICE) is None


def test_the_broker_s_own_dead_letters_keep_their_publisher_and_lose_forged_headers() -> None:
    death = {"x-death": [{"reason": "delivery_limit", "queue": "billing", "count": 1}], "x-delivery-count": 50}
    # Dead-lettered by the broker on a first delivery: the publisher's user_id, its forged headers.
    letter = published("payments", **FORGED, **death)
    assert failures.read(letter, BODY, SERVICE).reason == "delivery_limit"
    replayed = wire(failures.replay_properties(letter, BODY, SERVICE))
    assert not {"x-death", "x-delivery-count"} & set(replayed.headers)
    assert failures.trusted_state(replayed, BODY, SERVICE) == State(attempt=1, publisher="payments")
    # Dead-lettered by the broker while it was one of our retry copies: still ours.
    retry = failed(published("orders"), attempt=1)
    limit_reached = _with_headers(retry, death)
    assert failures.trusted_state(limit_reached, BODY, SERVICE) == State(attempt=2, publisher="orders")


def test_copies_are_persistent_never_expire_and_keep_the_other_properties() -> None:
    original = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=1,
        expiration="60000",
        priority=4,
        correlation_id="c-1",
        message_id="e-1",
        type="orders.placed",
        app_id="orders",
        headers=dict(CE),
    )
    for copy in (failed(original, attempt=1), wire(failures.replay_properties(original, BODY, SERVICE))):
        assert (copy.delivery_mode, copy.expiration) == (2, None)
        kept = {name: getattr(original, name) for name in failures.KEPT_PROPERTIES}
        assert {name: getattr(copy, name) for name in failures.KEPT_PROPERTIES} == kept


def test_read_describes_a_sealed_dead_letter() -> None:
    letter = failed(failed(published("orders"), attempt=1), attempt=2)
    record = failures.read(letter, BODY, SERVICE)
    assert (record.reason, record.error, record.exception) == ("receiver-error", "boom", "builtins.RuntimeError")
    assert (record.attempts, record.routing_key) == (2, "orders.placed")
    assert record.failed_at is not None


def test_every_reason_has_a_distinct_code() -> None:
    codes = [reason.value for reason in failures.Reason]
    assert len(codes) == len(set(codes))
    assert {"internal-error", "undecodable", "user-mismatch", "receiver-error"} <= set(codes)

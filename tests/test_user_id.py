"""REQUIRE_USER_ID across a retry: the broker-checked sender must survive the delay queue."""

from __future__ import annotations

from typing import Any

import pika
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster import failures
from broadcaster.consumer import Consumer
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Settlement, Verdict
from broadcaster.workers import Delivery, Finished

RETRY = Settlement(Verdict.RETRIED, "billing.delay.1000ms")  # the receiver raised: to the first delay queue


class Ping(BaseModel):
    n: int


class _Channel:
    """Records what the consumer republishes instead of sending it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, pika.BasicProperties]] = []

    def basic_publish(self, exchange: str, queue: str, body: bytes, properties: Any, mandatory: bool) -> None:
        self.published.append((queue, body, properties))


def test_a_retried_event_still_passes_require_user_id() -> None:
    config = BroadcasterSettings.model_validate({"SERVICE_NAME": "billing", "REQUIRE_USER_ID": True})
    calls: list[int] = []
    broadcaster.subscribe("orders.ping", schema=Ping, signal=Signal()).connect(
        lambda n, **_: calls.append(n), weak=False
    )
    props = properties_for(Envelope.new(source="orders", type="orders.ping"), user_id="orders")
    first = dispatch(props, b'{"n": 1}', settings=config, subscriptions=subscriptions())
    assert first.action is Action.ACK  # the broker-validated user_id matches ce-source

    # The receiver raised once: the consumer sends the message to its delay queue.
    channel, consumer = _Channel(), Consumer(config, subscriptions())
    delivery = Delivery(consumer.topology, channel, 1, "orders.ping", props, b'{"n": 1}', 1)
    failed = Outcome(Action.RETRY, first.envelope, "receiver-error", "boom", "RuntimeError")
    consumer._executor.carry_out(Finished(delivery, failed, True, 0.0, 1), RETRY)
    [(_, body, retried)] = channel.published

    second = dispatch(retried, body, settings=config, subscriptions=subscriptions(), attempt=2)
    assert (second.action, second.reason) == (Action.ACK, "")
    assert calls == [1, 1]


def _wire(properties: pika.BasicProperties) -> pika.BasicProperties:
    decoded = pika.BasicProperties()
    decoded.decode(b"".join(properties.encode()))
    return decoded


def _fail(consumer: Consumer, props: pika.BasicProperties, body: bytes, attempt: int) -> pika.BasicProperties:
    """What the consumer republishes after the receiver raised on delivery `attempt`, as read back."""
    channel = _Channel()
    delivery = Delivery(consumer.topology, channel, 1, "orders.ping", props, body, attempt)
    failed = Outcome(Action.RETRY, None, "receiver-error", "boom", "builtins.RuntimeError")
    consumer._executor.carry_out(Finished(delivery, failed, True, 0.0, attempt), RETRY)
    [(_, _, retried)] = channel.published
    return _wire(retried)


def test_a_genuine_event_passes_require_user_id_on_every_attempt_and_after_a_replay() -> None:
    config = BroadcasterSettings.model_validate(
        {"SERVICE_NAME": "billing", "BROKER_URL": "amqp://billing:pw@h/%2F", "REQUIRE_USER_ID": True}
    )
    attempts: list[int] = []
    broadcaster.subscribe("orders.ping", schema=Ping, signal=Signal()).connect(
        lambda envelope, **_: attempts.append(envelope.attempt), weak=False
    )
    consumer, body = Consumer(config, subscriptions()), b'{"n": 1}'
    props = _wire(properties_for(Envelope.new(source="orders", type="orders.ping"), user_id="orders"))
    for attempt in range(1, 5):
        props = _fail(consumer, props, body, attempt)
        assert props.user_id == "billing"  # the copy is the daemon's, the publisher travels sealed
    outcome = dispatch(props, body, settings=config, subscriptions=subscriptions(), attempt=5)
    assert (outcome.action, attempts) == (Action.ACK, [5])

    replayed = _wire(failures.replay_properties(props, body, config))
    assert dispatch(replayed, body, settings=config, subscriptions=subscriptions()).action is Action.ACK
    assert attempts == [5, 1]


def test_a_forged_publisher_is_never_believed_even_after_a_replay() -> None:
    config = BroadcasterSettings.model_validate(
        {"SERVICE_NAME": "billing", "BROKER_URL": "amqp://billing:pw@h/%2F", "REQUIRE_USER_ID": True}
    )
    calls: list[int] = []
    broadcaster.subscribe("orders.ping", schema=Ping, signal=Signal()).connect(
        lambda n, **_: calls.append(n), weak=False
    )
    forged_headers = {"x-broadcaster-user-id": "orders", "x-broadcaster-attempt": 3}
    envelope = Envelope.new(source="orders", type="orders.ping")
    forged = _wire(properties_for(envelope, headers={**envelope.headers(), **forged_headers}))  # no user_id
    body = b'{"n": 1}'
    first = dispatch(forged, body, settings=config, subscriptions=subscriptions())
    assert (first.action, first.reason) == (Action.DEAD_LETTER, "user-mismatch")
    assert first.detail == (
        "ce-source 'orders' needs broker user 'orders'; it was published without a broker-validated user_id"
    )
    letter = _wire(
        failures.failure_properties(
            forged,
            body,
            config,
            attempt=1,
            reason=first.reason,
            error=first.detail,
            exception="",
            queue="billing",
            routing_key="orders.ping",
        )
    )
    replayed = _wire(failures.replay_properties(letter, body, config))
    assert replayed.user_id == "billing"  # the daemon's own user now, as in the reported attack
    again = dispatch(replayed, body, settings=config, subscriptions=subscriptions())
    assert (again.action, again.reason) == (Action.DEAD_LETTER, "user-mismatch")
    assert calls == []

"""REQUIRE_USER_ID across a retry: the broker-checked sender must survive the delay queue."""

from __future__ import annotations

from typing import Any

import pika
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.consumer import Consumer, _Delivery, _Finished
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import Envelope, properties_for
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings


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
    delivery = _Delivery(consumer.topology, channel, 1, "orders.ping", props, b'{"n": 1}', 1)
    failed = Outcome(Action.RETRY, first.envelope, "receiver-error", "boom", "RuntimeError")
    consumer._republish(channel, delivery, _Finished(delivery, failed, True, 0.0, 1), "billing.delay.1000ms")
    [(_, body, retried)] = channel.published

    second = dispatch(retried, body, settings=config, subscriptions=subscriptions(), attempt=2)
    assert (second.action, second.reason) == (Action.ACK, "")
    assert calls == [1, 1]

"""Events no queue takes: returned, counted and logged by the publisher, or parked in UNROUTED_QUEUE and replayed."""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY
from pydantic import BaseModel

import broadcaster
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.publisher import Publisher
from broadcaster.settings import get_settings
from broadcaster.topology import Partitions
from tests.conftest import Broker


class Thing(BaseModel):
    n: int


def message(n: int, event: str) -> OutboundMessage:
    return OutboundMessage(Envelope.new(source="tests", type=event), json.dumps({"n": n}).encode())


def unrouted_count(event: str) -> float:
    return REGISTRY.get_sample_value("broadcaster_unrouted_total", {"event": event}) or 0.0


def test_unrouted_events_are_counted_per_type_logged_once_and_still_confirmed(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    tap = broker.tap("ops.routed")
    lost, other = f"ops.nobody.{uuid.uuid4().hex[:6]}", f"ops.nobody-else.{uuid.uuid4().hex[:6]}"
    publisher = Publisher(get_settings())
    try:
        with caplog.at_level(logging.WARNING, logger="broadcaster.publisher"):
            for n in range(5):
                publisher.publish(message(n, lost))
            publisher.publish(message(5, other))
            publisher.publish(message(6, "ops.routed"))
            publisher.flush(10)  # a returned message is acked afterwards: nothing stays pending
    finally:
        publisher.close(5)
    assert publisher.pending == 0
    assert publisher.unrouted == 6
    assert unrouted_count(lost) == 5
    assert unrouted_count(other) == 1
    assert unrouted_count("ops.routed") == 0
    warnings = [r.getMessage() for r in caplog.records if "reached no queue" in r.getMessage()]
    assert len([w for w in warnings if lost in w]) == 1  # once per event type and interval
    assert len([w for w in warnings if other in w]) == 1
    assert [json.loads(m.body)["n"] for m in broker.drain(tap)] == [6]


@pytest.fixture
def parked(broker: Broker, settings: Any) -> Any:
    """UNROUTED_QUEUE set for the test's exchange; its queue and alternate exchange deleted afterwards."""
    queue = f"{broker.exchange}.parked"
    settings.BROADCASTER = {**settings.BROADCASTER, "UNROUTED_QUEUE": queue}
    yield queue
    channel = broker.connection.channel()
    channel.queue_delete(queue)
    channel.exchange_delete(f"{broker.exchange}.unrouted")


def dead_letters(*args: str) -> str:
    out = io.StringIO()
    call_command("dead_letters", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_unrouted_queue_parks_events_until_a_subscriber_exists_then_replays_them(broker: Broker, parked: str) -> None:
    call_command("broadcaster_topology", "--apply", stdout=io.StringIO())  # no subscription yet
    publisher = Publisher(get_settings())
    try:
        for n in range(3):
            publisher.publish(message(n, "ops.later"))
        publisher.publish(message(3, "ops.never"))
        publisher.flush(10)
    finally:
        publisher.close(5)
    assert publisher.unrouted == 0  # the alternate exchange took them: nothing returned
    assert broker.count(parked) == 4
    listed = dead_letters("list", "--queue", "unrouted")
    assert "ops.later" in listed
    assert f"listed 4 of 4 dead letters in queue {parked!r}" in listed

    broadcaster.subscribe("ops.later", schema=Thing)  # the consumer is deployed
    call_command("broadcaster_topology", "--apply", stdout=io.StringIO())
    out = dead_letters("replay", "--queue", "unrouted", "--event", "ops.later")
    assert "replayed 3 of 4 unrouted events" in out
    received = broker.drain(broker.exchange)  # the service queue is named after the test's exchange
    assert [json.loads(m.body)["n"] for m in received] == [0, 1, 2]
    assert all(m.headers["ce-type"] == "ops.later" for m in received)
    assert broker.count(parked) == 1  # ops.never stays parked, nothing lost

    out = dead_letters("replay", "--queue", "unrouted")
    assert broker.count(parked) == 1  # still bound nowhere: back to the parking queue, not lost
    assert "replayed 1 of 1" in out


def test_the_unrouted_option_names_the_missing_setting(broker: Broker) -> None:
    with pytest.raises(CommandError, match="UNROUTED_QUEUE"):
        dead_letters("list", "--queue", "unrouted")


def test_every_declaration_of_the_exchange_agrees_on_its_alternate_exchange(
    broker: Broker, parked: str, daemon: Any
) -> None:
    broadcaster.subscribe("ops.ordered", schema=Thing, ordered=True)
    broadcaster.subscribe("ops.everywhere", schema=Thing, fanout="instance")
    partitions = Partitions.for_settings(get_settings())
    try:
        daemon()  # service, instance and partition queues: each declares EXCHANGE with the same arguments
        publisher = Publisher(get_settings())
        try:
            publisher.publish(message(1, "ops.nobody"))
            publisher.flush(10)
        finally:
            publisher.close(5)
        assert broker.count(parked) == 1
        out = io.StringIO()
        try:
            call_command("broadcaster_topology", "--check", stdout=out)
        except SystemExit:
            pytest.fail(out.getvalue())
        assert out.getvalue().strip() == "the broker matches the code"
    finally:
        channel = broker.connection.channel()
        for queue in partitions.queues:
            channel.queue_delete(queue.queue)
        channel.exchange_delete(partitions.exchange)

"""The daemon re-emits events, acks only after receivers ran, retries, and dead-letters with reasons."""

from __future__ import annotations

import subprocess
import threading
import time
from decimal import Decimal
from typing import Any

import pika
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.consumer import Consumer
from broadcaster.exceptions import BrokerUnavailable
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.topology import Topology
from tests.conftest import Broker, wait_for


class Shipped(BaseModel):
    order_id: int
    weight: Decimal


shipped = Signal()


def send_shipped(order_id: int) -> None:
    shipped.send(sender=None, order_id=order_id, weight="1.5")
    broadcaster.flush(10)


@pytest.fixture
def wired(settings: Any) -> list[dict[str, Any]]:
    """`shipped` is broadcast as warehouse.shipped and re-emitted on a local signal here."""
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [0.2, 0.3]}
    broadcaster.broadcast(shipped, event="warehouse.shipped", schema=Shipped)
    calls: list[dict[str, Any]] = []
    local = broadcaster.subscribe("warehouse.shipped", schema=Shipped)
    local.connect(lambda **kwargs: calls.append(kwargs), weak=False)
    return calls


def test_event_reaches_the_remote_receiver_and_is_acked(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    consumer = daemon()
    send_shipped(1)
    wait_for(lambda: wired, "the receiver")
    assert wired[0]["order_id"] == 1
    assert wired[0]["weight"] == Decimal("1.5")
    assert wired[0]["envelope"].type == "warehouse.shipped"
    wait_for(lambda: consumer.counts["acked"] == 1, "the ack")
    assert broker.count(consumer.topology.queue) == 0


def test_topology_is_declared(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    consumer = daemon()
    topology = consumer.topology
    assert topology.queue == broker.exchange
    channel = broker.connection.channel()
    for name in [topology.queue, topology.dead_letter_queue, *topology.retry_queues]:
        channel.queue_declare(name, passive=True)  # raises if missing
    assert topology.retry_queues == [f"{topology.queue}.delay.200ms", f"{topology.queue}.delay.300ms"]


def test_failing_receiver_is_retried_then_dead_lettered_with_why(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    attempts: list[tuple[str, int]] = []

    def flaky(envelope: broadcaster.Envelope, **_: object) -> None:
        attempts.append((envelope.id, envelope.attempt))
        raise RuntimeError("warehouse API down")

    subscriptions()["warehouse.shipped"].signal.connect(flaky, weak=False)
    consumer = daemon()
    send_shipped(2)
    topology = consumer.topology
    wait_for(lambda: broker.count(topology.dead_letter_queue) == 1, "the dead letter")
    assert [attempt for _, attempt in attempts] == [1, 2, 3]
    assert len({envelope_id for envelope_id, _ in attempts}) == 1  # same event id every time
    [dead] = broker.drain(topology.dead_letter_queue)
    headers = dead.headers
    assert headers["x-broadcaster-reason"] == "receiver-error"
    assert headers["x-broadcaster-exception"] == "builtins.RuntimeError"
    assert headers["x-broadcaster-error"] == "warehouse API down"
    assert headers["x-broadcaster-attempts"] == 3
    assert headers["x-broadcaster-routing-key"] == "warehouse.shipped"
    assert headers["x-broadcaster-first-failure"] < headers["x-broadcaster-last-failure"]
    assert dead.body == b'{"order_id":2,"weight":"1.5"}'
    assert consumer.counts["retried"] == 2


def test_bad_message_is_dead_lettered_and_the_daemon_goes_on(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    consumer = daemon()
    broker.publish(
        "warehouse.shipped", b"\x80\x04K\x01.", pika.BasicProperties(content_type="application/x-python-serialize")
    )
    send_shipped(3)
    wait_for(lambda: wired, "the good event after the bad one")
    [dead] = broker.drain(consumer.topology.dead_letter_queue)
    assert dead.headers["x-broadcaster-reason"] == "content-type"
    assert dead.body == b"\x80\x04K\x01."
    assert broker.count(consumer.topology.queue) == 0


def test_events_caused_by_a_receiver_carry_causation(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    invoiced = Signal()

    class Invoiced(BaseModel):
        order_id: int

    broadcaster.broadcast(invoiced, event="billing.invoiced", schema=Invoiced)
    subscriptions()["warehouse.shipped"].signal.connect(
        lambda order_id, **_: invoiced.send(sender=None, order_id=order_id), weak=False
    )
    tap = broker.tap("billing.#")
    daemon()
    send_shipped(4)
    wait_for(lambda: broker.count(tap) == 1, "the caused event")
    [caused] = broker.drain(tap)
    assert caused.headers["ce-causationid"] == wired[0]["envelope"].id
    assert caused.headers["ce-hops"] == "1"


def test_stop_finishes_the_message_in_hand(broker: Broker, daemon: Any, wired: list[Any]) -> None:
    holder: list[Consumer] = []
    finished = threading.Event()

    def slow(**_: object) -> None:
        holder[0].stop()  # as SIGTERM would, mid-receiver
        time.sleep(0.3)
        finished.set()

    subscriptions()["warehouse.shipped"].signal.connect(slow, weak=False)
    holder.append(daemon())
    send_shipped(5)
    wait_for(finished.is_set, "the receiver")
    wait_for(lambda: not holder[0].connected, "the daemon to close")
    assert holder[0].counts["acked"] == 1
    assert broker.count(holder[0].topology.queue) == 0


def test_max_messages_stops_the_daemon(broker: Broker, wired: list[Any]) -> None:
    consumer = Consumer(get_settings(), subscriptions(), max_messages=2)
    Topology.for_settings(get_settings()).declare(broker.connection.channel(), ["warehouse.shipped"])
    for n in range(3):
        send_shipped(n)
    consumer.run()  # returns by itself
    assert len(wired) == 2
    assert broker.count(consumer.topology.queue) == 1


def test_unreachable_broker_fails_fast_with_a_clear_message(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": "amqp://app:s3cret@127.0.0.1:1/%2F"}
    with pytest.raises(BrokerUnavailable, match=r"amqp://app:\*\*\*@127\.0\.0\.1:1/") as caught:
        Consumer(get_settings(), {}).run()
    assert "s3cret" not in str(caught.value)
    with pytest.raises(CommandError, match="cannot connect to the broker") as command_error:
        call_command("consume_signals")
    assert "s3cret" not in str(command_error.value)


def test_quorum_queues_by_setting(broker: Broker, settings: Any, daemon: Any, wired: list[Any]) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": "quorum"}
    consumer = daemon()
    topology = consumer.topology
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    types = dict(line.split() for line in listing.splitlines() if line.startswith(broker.exchange))
    expected = [topology.queue, topology.dead_letter_queue, *topology.retry_queues]
    assert {name: types.get(name) for name in expected} == dict.fromkeys(expected, "quorum")
    send_shipped(9)
    wait_for(lambda: wired, "the event through a quorum queue")


def test_instance_fanout_reaches_every_daemon_while_service_events_reach_one(
    broker: Broker, settings: Any, wired: list[Any]
) -> None:
    invalidations: list[str] = []
    flushed = Signal()

    class CacheFlushed(BaseModel):
        key: str

    broadcaster.broadcast(flushed, event="catalog.cache_flushed", schema=CacheFlushed)
    broadcaster.subscribe("catalog.cache_flushed", schema=CacheFlushed, fanout="instance").connect(
        lambda key, **_: invalidations.append(key), weak=False
    )
    consumers, threads = [], []
    for name in ("pod-a", "pod-b"):
        settings.BROADCASTER = {**settings.BROADCASTER, "INSTANCE_ID": name, "INSTANCE_QUEUE_EXPIRES": 5}
        consumer = Consumer(get_settings(), subscriptions())
        consumers.append(consumer)
        threads.append(threading.Thread(target=consumer.run, daemon=True))
        threads[-1].start()
        wait_for(lambda c=consumer: c.connected, "a daemon to connect")
    try:
        flushed.send(sender=None, key="prices")
        send_shipped(10)
        wait_for(lambda: len(invalidations) == 2 and len(wired) == 1, "every instance and one service delivery")
        time.sleep(0.3)  # nothing more may arrive
        assert invalidations == ["prices", "prices"]
        assert len(wired) == 1
        assert {c.instance_topology.queue for c in consumers if c.instance_topology} == {
            f"{broker.exchange}.instance.pod-a",
            f"{broker.exchange}.instance.pod-b",
        }
    finally:
        for consumer, thread in zip(consumers, threads, strict=True):
            consumer.stop()
            thread.join(10)
    # Gone once their daemon is: x-expires removes an unused instance queue.
    queue = f"{broker.exchange}.instance.pod-a"
    wait_for(lambda: not _queue_exists(queue), "the instance queue to expire", timeout=20)


def _queue_exists(name: str) -> bool:
    # Not a passive declare: declaring a queue, even passively, resets its expiry timer.
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return name in listing.split()


def test_a_failing_instance_event_is_dead_lettered_at_once(broker: Broker, settings: Any, daemon: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "INSTANCE_ID": "pod-c"}
    flushed = Signal()

    class CacheFlushed(BaseModel):
        key: str

    def fail(**_: object) -> None:
        raise RuntimeError("cache down")

    broadcaster.broadcast(flushed, event="catalog.cache_flushed", schema=CacheFlushed)
    broadcaster.subscribe("catalog.cache_flushed", schema=CacheFlushed, fanout="instance").connect(fail, weak=False)
    consumer = daemon()
    assert consumer.instance_topology is not None
    assert consumer.instance_topology.retry_queues == []
    flushed.send(sender=None, key="prices")
    broadcaster.flush(10)
    wait_for(lambda: broker.count(consumer.topology.dead_letter_queue) == 1, "the dead letter")
    [dead] = broker.drain(consumer.topology.dead_letter_queue)
    assert dead.headers["x-broadcaster-queue"] == f"{broker.exchange}.instance.pod-c"
    assert dead.headers["x-broadcaster-reason"] == "receiver-error"


@pytest.mark.faults
def test_receivers_slower_than_the_heartbeat_run_once_on_one_connection(
    broker: Broker, settings: Any, daemon: Any
) -> None:
    """Receivers of 0.5-5 s with a 2 s heartbeat: no dropped connection, no redelivery.

    The broker declares a client dead after two silent heartbeat intervals (4 s here).
    Receivers run on their own thread while the connection's thread keeps heartbeats
    flowing and acks each message as soon as it is done.
    """
    settings.BROADCASTER = {**settings.BROADCASTER, "HEARTBEAT": 2, "RETRY_DELAYS": [0.2]}
    durations = {1: 0.5, 2: 5.0, 3: 1.0, 4: 4.5, 5: 0.5, 6: 3.0}
    runs: list[int] = []
    local = broadcaster.subscribe("warehouse.shipped", schema=Shipped)

    def slow(order_id: int, **_: Any) -> None:
        runs.append(order_id)
        time.sleep(durations[order_id])

    local.connect(slow, weak=False)
    consumer = daemon()
    first_connection = consumer._link.connection
    for order_id in durations:  # all queued at once: the daemon holds them as one round
        broker.publish(
            "warehouse.shipped",
            Shipped(order_id=order_id, weight=Decimal(1)).model_dump_json().encode(),
            pika.BasicProperties(
                content_type="application/json",
                headers={
                    "ce-specversion": "1.0",
                    "ce-id": f"slow-{order_id}",
                    "ce-source": "w",
                    "ce-type": "warehouse.shipped",
                },
            ),
        )
    wait_for(lambda: consumer.counts["acked"] == len(durations), "every slow receiver", timeout=40)
    time.sleep(2.5)  # a redelivery after a dropped connection would show up here
    assert sorted(runs) == sorted(durations), "each message's receivers ran exactly once"
    assert consumer.connections_opened == 1
    assert consumer._link.connection is first_connection
    assert consumer.counts == {"acked": len(durations)}
    assert broker.count(consumer.topology.queue) == 0
    opened = consumer.connections_opened
    print(f"slow receivers: {len(durations)} messages, {len(runs)} receiver runs, {opened} connection(s)")

"""Queue names and declaration arguments of a service and of one of its instances."""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal
from pydantic import BaseModel

from broadcaster.registry import Subscription
from broadcaster.settings import get_settings
from broadcaster.topology import ServiceQueues, Topology


class Recorder:
    """A channel that records declarations."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.bindings: list[tuple[str, str, str]] = []
        self.exchange_bindings: list[tuple[str, str, str]] = []

    def exchange_declare(self, name: str, **kwargs: Any) -> None:
        self.exchanges[name] = kwargs

    def queue_declare(self, name: str, durable: bool, arguments: dict[str, Any]) -> None:
        self.queues[name] = arguments

    def exchange_bind(self, destination: str, source: str, routing_key: str) -> None:
        self.exchange_bindings.append((destination, source, routing_key))

    def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.bindings.append((queue, exchange, routing_key))


def test_service_topology(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [0.5, 2], "QUEUE_TYPE": "quorum"}
    topology = Topology.for_settings(get_settings())
    channel = Recorder()
    topology.declare(channel, ["b.two", "a.one", "a.one"])
    assert channel.exchanges == {
        "signals": {"exchange_type": "topic", "durable": True},
        "tests.requeue": {"exchange_type": "direct", "durable": True},
    }
    assert sorted(channel.queues) == ["tests", "tests.dead-letter", "tests.delay.2000ms", "tests.delay.500ms"]
    assert channel.queues["tests"]["x-dead-letter-routing-key"] == "tests.dead-letter"  # the broker's backstop
    assert channel.queues["tests"]["x-dead-letter-exchange"] == "tests.requeue"  # never the default exchange
    assert channel.queues["tests"]["x-delivery-limit"] > 0
    # The broker's own dead-lettering of a quorum queue is at least once only when asked for.
    assert channel.queues["tests"]["x-dead-letter-strategy"] == "at-least-once"
    assert channel.queues["tests"]["x-overflow"] == "reject-publish"
    assert channel.queues["tests.delay.500ms"] == {
        "x-queue-type": "quorum",
        "x-message-ttl": 500,
        "x-dead-letter-exchange": "tests.requeue",
        "x-dead-letter-routing-key": "tests",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert channel.bindings == [
        ("tests", "signals", "a.one"),
        ("tests", "signals", "b.two"),
        # the daemon's own way back into its queues, routing key = queue name
        ("tests", "tests.requeue", "tests"),
        ("tests.dead-letter", "tests.requeue", "tests.dead-letter"),
        ("tests.delay.500ms", "tests.requeue", "tests.delay.500ms"),
        ("tests.delay.2000ms", "tests.requeue", "tests.delay.2000ms"),
    ]


def test_instance_topology_expires_and_shares_the_dead_letter_queue(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "INSTANCE_ID": "pod-7", "INSTANCE_QUEUE_EXPIRES": 60}
    topology = Topology.for_instance(get_settings())
    channel = Recorder()
    topology.declare(channel, ["cache.flushed"])
    assert topology.queue == "tests.instance.pod-7"
    assert topology.dead_letter_queue == "tests.dead-letter"
    assert list(channel.queues) == ["tests.instance.pod-7"]  # the service declares its dead-letter queue
    assert topology.requeue_exchange == "tests.requeue"  # and the exchange to reach it
    assert list(channel.exchanges) == ["signals"]
    assert channel.queues["tests.instance.pod-7"]["x-expires"] == 60_000
    assert channel.queues["tests.instance.pod-7"]["x-queue-type"] == "classic"


class Payload(BaseModel):
    n: int = 0


def test_an_instance_queue_moved_off_a_dead_node_takes_the_next_name_and_keeps_the_rest(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "INSTANCE_ID": "pod-7"}
    subscribed = {
        "cache.flushed": Subscription("cache.flushed", Payload, Signal(), None, "1.0", fanout="instance"),
        "orders.placed": Subscription("orders.placed", Payload, Signal(), None, "1.0"),
    }
    queues = ServiceQueues.for_subscriptions(get_settings(), subscribed)
    once = queues.moved_instance(get_settings())
    twice = once.moved_instance(get_settings())
    assert [q.instance.queue for q in (queues, once, twice) if q.instance] == [
        "tests.instance.pod-7",
        "tests.instance.pod-7.moved-1",
        "tests.instance.pod-7.moved-2",
    ]
    assert twice.service == queues.service
    assert twice.instance_events == ("cache.flushed",)
    assert twice.instance is not None
    assert queues.instance is not None
    assert twice.instance.expires_ms == queues.instance.expires_ms
    assert twice.instance.dead_letter_queue == "tests.dead-letter"


class StrictRecorder(Recorder):
    """Records every declaration with its flags, as RabbitMQ 4.3 would judge them."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: dict[str, dict[str, Any]] = {}

    def queue_declare(self, name: str, durable: bool = False, **kwargs: Any) -> None:  # type: ignore[override]
        self.flags[name] = {"durable": durable, **kwargs}
        self.queues[name] = kwargs.get("arguments") or {}


# Refused by RabbitMQ 4.3 (CQv1 storage removed): any x-queue-mode, x-queue-version 1.
_REFUSED_ARGUMENTS = {"x-queue-mode", "x-queue-version", "x-queue-master-locator"}


def test_nothing_declared_is_refused_by_rabbitmq_4(settings: Any) -> None:
    for queue_type in ("classic", "quorum"):
        settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": queue_type, "INSTANCE_ID": "pod-1"}
        channel = StrictRecorder()
        Topology.for_settings(get_settings()).declare(channel, ["a.one"])
        Topology.for_instance(get_settings()).declare(channel, ["a.one"])
        assert "tests.instance.pod-1" in channel.flags
        for name, flags in channel.flags.items():
            # Transient non-exclusive queues are refused by default from 4.3 on.
            assert flags["durable"] or flags.get("exclusive"), name
            assert not _REFUSED_ARGUMENTS & set(channel.queues[name]), name
        assert all(declared["durable"] for declared in channel.exchanges.values())


def test_a_quorum_dead_letter_queue_outlives_rabbitmq_4_default_delivery_limit(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": "quorum"}
    channel = Recorder()
    Topology.for_settings(get_settings()).declare(channel, ["a.one"])
    # Every `dead_letters list` hands each message back once; 4.0 to 4.2 count that
    # against a default limit of 20 when none is declared.
    assert channel.queues["tests.dead-letter"]["x-delivery-limit"] >= 100_000
    settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": "classic"}
    channel = Recorder()
    Topology.for_settings(get_settings()).declare(channel, ["a.one"])
    assert "x-delivery-limit" not in channel.queues["tests.dead-letter"]  # classic queues have none

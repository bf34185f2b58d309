"""Queue names and declaration arguments of a service and of one of its instances."""

from __future__ import annotations

from typing import Any

from broadcaster.settings import get_settings
from broadcaster.topology import Topology


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

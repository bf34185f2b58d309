"""The two brokers of tests/test_behaviour.py: the test kit's, and RabbitMQ with a real daemon."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any, Protocol

import pika
import pika.exceptions
from pydantic import BaseModel

from broadcaster import failures
from broadcaster.consumer import Consumer
from broadcaster.envelope import Envelope, decode, properties_for
from broadcaster.payload import dump
from broadcaster.registry import broadcasts, subscriptions
from broadcaster.settings import get_settings
from broadcaster.testing import InMemoryBroker
from broadcaster.topology import Partitions, Topology
from tests.conftest import Broker, Received, wait_for

SERVICE = "tests"  # SERVICE_NAME of the test settings: what this process broadcasts as
OTHER = "shop"  # the service kit.send() publishes as


class Kit(Protocol):
    """What a scenario does and reads; the same on both brokers."""

    def start(self) -> None: ...
    def send(self, event: str, body: Any, **options: Any) -> bool: ...
    def bind(self, pattern: str) -> None: ...
    def finish(self, handled: int) -> None: ...
    def verdicts(self) -> dict[str, int]: ...
    def retries(self) -> list[tuple[int, str, str]]: ...
    def dead_letters(self) -> list[tuple[str, str | None, int | None]]: ...
    def dead_letter_headers(self) -> list[dict[str, Any]]: ...
    def kept(self, queue: str) -> list[Any]: ...
    def published(self) -> list[Envelope]: ...


class MemoryKit:
    def __init__(self) -> None:
        self.broker = InMemoryBroker()

    def start(self) -> None:
        self.broker.__enter__()

    def stop(self) -> None:
        if self.broker._transport is not None:
            self.broker.__exit__(None, None, None)

    def send(self, event: str, body: Any, **options: Any) -> bool:
        envelope = self.broker.send(event, body, **{"source": OTHER, **options})
        return all(message.headers.get("ce-id") != envelope.id for message in self.broker.unrouted)

    def bind(self, pattern: str) -> None:
        self.broker.bind(pattern)

    def finish(self, handled: int) -> None:
        self.broker.run_retries()

    def verdicts(self) -> dict[str, int]:
        return dict(Counter(h.verdict.value for h in self.broker.handled))

    def retries(self) -> list[tuple[int, str, str]]:
        return [(r.attempt, r.queue, r.reason) for r in self.broker.retries if not r.in_place]

    def dead_letters(self) -> list[tuple[str, str | None, int | None]]:
        return [(d.record.routing_key or "", d.reason, d.attempts) for d in self.broker.dead_letters]

    def dead_letter_headers(self) -> list[dict[str, Any]]:
        return [d.headers for d in self.broker.dead_letters]

    def kept(self, queue: str) -> list[Any]:
        return [m.payload for m in self.broker.queues[queue]]

    def published(self) -> list[Envelope]:
        return [event.envelope for event in self.broker]


class RabbitKit:
    """RabbitMQ with a Consumer on a thread, the real publisher, and taps that see what production does."""

    def __init__(self, broker: Broker) -> None:
        self.rabbit = broker
        self.consumer: Consumer | None = None
        self.thread: threading.Thread | None = None
        self.topology = Topology.for_settings(get_settings())
        self.events_tap: str | None = None
        self.dead: list[Received] = []

    def start(self) -> None:
        self.topology = Topology.for_settings(get_settings())  # with the test's own settings
        self.consumer = Consumer(get_settings(), subscriptions())
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.consumer is not None and self.consumer.connected, "the daemon")
        # Taps once the daemon declared EXCHANGE (with its alternate exchange, if any).
        # What this service publishes: a queue bound to exactly those events, so that
        # what no queue of the service takes is still returned to its publisher.
        events = sorted({b.event for b in broadcasts()})
        if events:
            self.events_tap = self._tap(self.rabbit.exchange, events, "events")
        # A copy of every retry: bound to the requeue exchange with each delay queue's name.
        self.retry_tap = self._tap(self.topology.requeue_exchange, self.topology.retry_queues, "retries")

    def _tap(self, exchange: str, keys: list[str], name: str) -> str:
        channel = self.rabbit.connection.channel()
        queue = f"{self.rabbit.exchange}.tap.{name}"
        channel.queue_declare(queue, durable=True)
        self.rabbit.queues.append(queue)
        for key in keys:
            channel.queue_bind(queue, exchange, key)
        return queue

    def kept(self, queue: str) -> list[Any]:
        return [json.loads(m.body) for m in self.rabbit.drain(queue)]

    def stop(self) -> None:
        if self.consumer is not None and self.thread is not None:
            self.consumer.stop()
            self.thread.join(10)
        channel = self.rabbit.connection.channel()
        channel.queue_delete(Topology.for_instance(get_settings()).queue)
        partitions = Partitions.for_settings(get_settings())
        for queue in partitions.queues:
            channel.queue_delete(queue.queue)
        channel.exchange_delete(partitions.exchange)
        settings = get_settings()
        if settings.unrouted_queue is not None and settings.unrouted_exchange is not None:
            channel.queue_delete(settings.unrouted_queue)
            channel.exchange_delete(settings.unrouted_exchange)

    def send(self, event: str, body: Any, *, headers: dict[str, Any] | None = None, **options: Any) -> bool:
        envelope = Envelope.new(type=event, **{"source": OTHER, **options})
        props = properties_for(envelope, headers={**envelope.headers(), **(headers or {})})
        channel = self.rabbit.connection.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish(self.rabbit.exchange, event, _body(body), props, mandatory=True)
        except pika.exceptions.UnroutableError:
            return False
        return True

    def bind(self, pattern: str) -> None:
        self.rabbit.connection.channel().queue_bind(self.topology.queue, self.rabbit.exchange, pattern)

    def finish(self, handled: int) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        wait_for(lambda: consumer.handled >= handled, f"{handled} deliveries settled")

    def verdicts(self) -> dict[str, int]:
        assert self.consumer is not None
        return dict(self.consumer.counts)

    def retries(self) -> list[tuple[int, str, str]]:
        return [
            (m.headers[failures.ATTEMPTS], m.routing_key, m.headers[failures.REASON])
            for m in self.rabbit.drain(self.retry_tap)
        ]

    def dead_letters(self) -> list[tuple[str, str | None, int | None]]:
        settings = get_settings()
        records = [failures.read(m.properties, m.body, settings) for m in self._dead_letters()]
        return [(r.routing_key or "", r.reason, r.attempts) for r in records]

    def dead_letter_headers(self) -> list[dict[str, Any]]:
        return [m.headers for m in self._dead_letters()]

    def _dead_letters(self) -> list[Received]:
        self.dead += self.rabbit.drain(self.topology.dead_letter_queue)
        return self.dead

    def published(self) -> list[Envelope]:
        tapped = self.rabbit.drain(self.events_tap) if self.events_tap else []
        mine = [m for m in tapped if m.headers.get("ce-source") == SERVICE]
        return [decode(m.properties, m.body).envelope for m in mine]


def _body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, BaseModel):
        return dump(body)
    return json.dumps(body).encode()

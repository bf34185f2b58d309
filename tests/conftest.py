"""Fixtures shared by the library's tests: each test gets its own exchange on the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest

from broadcaster import registry
from broadcaster.consumer import Consumer
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.topology import Topology
from broadcaster.transport import reset_publisher
from tests.helpers import BROKER_URL, Received


@dataclass
class Broker:
    """A pika connection plus the names this test owns, all deleted afterwards."""

    exchange: str
    queues: list[str] = field(default_factory=list)
    _connection: pika.BlockingConnection | None = None

    @property
    def connection(self) -> pika.BlockingConnection:
        """A connection of the test's own, made again if a fault test closed it."""
        if self._connection is not None:
            try:
                self._connection.process_data_events(0)  # notices a close by the broker
            except pika.exceptions.AMQPError:
                self._connection = None
        if self._connection is None:
            self._connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        return self._connection

    def tap(self, pattern: str = "#") -> str:
        """A queue bound to the test exchange, to see what the publisher sent."""
        channel = self.connection.channel()
        channel.exchange_declare(self.exchange, "topic", durable=True)
        name = f"{self.exchange}.tap.{len(self.queues)}"
        channel.queue_declare(name, durable=True)  # RabbitMQ 4.3 refuses transient non-exclusive queues
        channel.queue_bind(name, self.exchange, pattern)
        self.queues.append(name)
        return name

    def drain(self, queue: str) -> list[Received]:
        channel = self.connection.channel()
        messages = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append(Received(method.routing_key, properties, body))

    def count(self, queue: str) -> int:
        return int(self.connection.channel().queue_declare(queue, passive=True).method.message_count)

    def publish(
        self, routing_key: str, body: bytes, properties: pika.BasicProperties, exchange: str | None = None
    ) -> None:
        channel = self.connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(self.exchange if exchange is None else exchange, routing_key, body, properties)

    def cleanup(self) -> None:
        channel = self.connection.channel()
        topology = Topology.for_settings(get_settings())
        for name in [*self.queues, topology.queue, topology.dead_letter_queue, *topology.retry_queues]:
            channel.queue_delete(name)
        channel.exchange_delete(topology.requeue_exchange)
        channel.exchange_delete(f"{topology.queue}.control")  # the daemons' control exchange
        channel.exchange_delete(f"{topology.queue}.paused")
        channel.exchange_delete(self.exchange)
        self.connection.close()


@pytest.fixture
def broker(settings: Any) -> Iterator[Broker]:
    """A unique exchange (set as BROADCASTER["EXCHANGE"]) and a connection to inspect it."""
    exchange = f"test-{uuid.uuid4().hex[:12]}"
    settings.BROADCASTER = {**settings.BROADCASTER, "EXCHANGE": exchange, "QUEUE": exchange}
    broker = Broker(exchange)
    yield broker
    reset_publisher(timeout=5)
    broker.cleanup()  # before `settings` restores BROADCASTER, so the names are this test's


@pytest.fixture
def without_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave out the test settings' MySQL alias, for tests that run every system check.

    Under Django 6.1 the model checks run against every alias, and Django's own MySQL
    backend connects to learn its column types (whatever the models): a test without
    database access then fails, unless an earlier test happened to connect.
    """
    from django.db import connections

    if "mysql" in connections.settings:
        monkeypatch.delitem(connections.settings, "mysql")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Registrations made by a test do not leak into the next one."""
    with registry.isolated():
        yield


@pytest.fixture
def daemon(broker: Broker, settings: Any) -> Iterator[Callable[..., Consumer]]:
    """Start a Consumer on a thread; stopped and joined at teardown."""
    started: list[tuple[Consumer, threading.Thread]] = []

    def start(**options: Any) -> Consumer:
        consumer = Consumer(get_settings(), subscriptions(), **options)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        wait_for(lambda: consumer.connected, "the consumer to connect")
        return consumer

    yield start
    for consumer, thread in started:
        consumer.stop()
        thread.join(10)
        assert not thread.is_alive(), "consumer did not stop"


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# Fixtures that reach the real RabbitMQ or PostgreSQL: a test using one of them, or any
# test under tests/integration or marked django_db, gets the `broker` marker, so
# `pytest -m "not broker"` is the broker-free inner loop.
_BROKER_FIXTURES = frozenset({"broker", "daemon", "rabbit", "service", "db", "transactional_db", "admin_client"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            "integration" in item.path.parts
            or fixtures & _BROKER_FIXTURES
            or item.get_closest_marker("django_db") is not None
            or item.get_closest_marker("faults") is not None
        ):
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def outbox_mode(settings: Any, broker: Broker) -> Iterator[Broker]:
    """PUBLISH_MODE="outbox", and post_save of tests.testapp's Article broadcast as tests.article_saved."""
    from django.db.models.signals import post_save

    import broadcaster
    from broadcaster.outbox import stop_web_relay
    from tests.test_outbox import ArticleSaved
    from tests.testapp.models import Article

    settings.BROADCASTER = {**settings.BROADCASTER, "PUBLISH_MODE": "outbox", "OUTBOX_BATCH": 50}
    broadcaster.broadcast(post_save, sender=Article, event="tests.article_saved", schema=ArticleSaved)
    yield broker
    stop_web_relay()  # its thread must not outlive the test's database

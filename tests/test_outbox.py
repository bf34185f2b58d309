"""Outbox mode stores events with the business change; the relay publishes each once, in order."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connections, transaction
from django.db.models.signals import post_save
from pydantic import BaseModel, ConfigDict

import broadcaster
from broadcaster.exceptions import PublishError
from broadcaster.models import OutboxEvent
from broadcaster.outbox import Relay, _message, stop_web_relay
from broadcaster.publisher import Publisher
from broadcaster.settings import get_settings
from tests.broker_admin import rabbitmqctl
from tests.conftest import BROKER_URL, Broker
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])


class ArticleRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str


class ArticleSaved(BaseModel):
    instance: ArticleRef


def titles(broker: Broker, queue: str) -> list[str]:
    return [json.loads(m.body)["instance"]["title"] for m in broker.drain(queue)]


@pytest.mark.parametrize("using", ["default", "sqlite"])
def test_event_is_a_row_of_the_same_transaction(outbox_mode: Broker, using: str) -> None:
    with transaction.atomic(using=using):
        Article.objects.using(using).create(title="kept")
        assert OutboxEvent.objects.using(using).count() == 1  # written before commit

    def write_then_fail() -> None:
        with transaction.atomic(using=using):
            Article.objects.using(using).create(title="rolled back")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert list(OutboxEvent.objects.using(using).values_list("event_type", flat=True)) == ["tests.article_saved"]


@pytest.mark.parametrize("using", ["default", "sqlite"])
def test_relay_publishes_in_order_and_marks_rows(outbox_mode: Broker, using: str) -> None:
    tap = outbox_mode.tap()
    for n in range(120):
        Article.objects.using(using).create(title=f"a{n}")
    call_command("relay_outbox", "--once", "--database", using, stdout=_null())
    # The web process's relay, woken by the commits, may still be marking a batch it sent,
    # or may have held the turn while relay_outbox looked (SQLite relays take turns): what
    # it leaves when it stops waits for the next relay.
    stop_web_relay()
    call_command("relay_outbox", "--once", "--database", using, stdout=_null())
    assert titles(outbox_mode, tap) == [f"a{n}" for n in range(120)]
    assert not OutboxEvent.objects.using(using).filter(published_at__isnull=True).exists()
    call_command("relay_outbox", "--once", "--database", using, stdout=_null())
    assert outbox_mode.count(tap) == 0  # published rows are not published again


def test_web_process_relays_after_commit(outbox_mode: Broker) -> None:
    tap = outbox_mode.tap()
    with transaction.atomic():
        Article.objects.create(title="soon")
    _wait(lambda: outbox_mode.count(tap) == 1)
    _wait(lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists())


def test_broker_down_at_commit_loses_nothing(settings: Any, outbox_mode: Broker) -> None:
    tap = outbox_mode.tap()
    down = get_settings().model_copy(
        update={"broker_url": "amqp://guest:guest@127.0.0.1:1/%2F", "publish_timeout": 0.3}
    )
    Article.objects.create(title="while down")
    relay = Relay(down)
    with pytest.raises(PublishError):
        relay.run_once()
    row = OutboxEvent.objects.get()
    assert row.published_at is None
    assert row.attempts >= 1
    assert row.last_error
    Relay().run_once()  # the broker is back
    assert titles(outbox_mode, tap) == ["while down"]


def test_concurrent_relays_publish_each_row_once(outbox_mode: Broker) -> None:
    tap = outbox_mode.tap()
    OutboxEvent.objects.bulk_create([outbox_row(n) for n in range(600)])
    relays = [Relay() for _ in range(3)]
    threads = [threading.Thread(target=_run_and_close, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    received = [json.loads(m.body)["instance"]["title"] for m in outbox_mode.drain(tap)]
    assert received == [f"r{n}" for n in range(600)]  # each row once, in order
    assert sum(relay.published for relay in relays) == 600


def test_published_rows_are_pruned_after_retention(settings: Any, outbox_mode: Broker) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "OUTBOX_RETENTION": 0}
    Article.objects.create(title="old news")
    relay = Relay()
    relay.run_once()  # publishes and then prunes what is past retention
    relay.close()
    assert OutboxEvent.objects.count() == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resources() -> tuple[int, int]:
    """This process's open file descriptors and resident memory (bytes)."""
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return len(os.listdir("/proc/self/fd")), rss_pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("down", ["closed-port", "refused-login"])
def test_a_relay_failing_for_long_holds_one_publisher_and_grows_nothing(outbox_mode: Broker, down: str) -> None:
    tap = outbox_mode.tap()
    OutboxEvent.objects.bulk_create([outbox_row(n) for n in range(500)])
    port, password = (closed_port(), "guest") if down == "closed-port" else (5672, "not-the-password")
    failing = get_settings().model_copy(
        update={
            "broker_url": f"amqp://guest:{password}@127.0.0.1:{port}/%2F",
            "publish_timeout": 0.02,
            "outbox_batch": 500,
            "reconnect_max_delay": 0.05,  # the publisher tries (and fails) to connect all along
        }
    )
    relay = Relay(failing)

    def fail(times: int) -> tuple[int, int]:
        for _ in range(times):
            with pytest.raises(PublishError):
                relay.run_once()
        gc.collect()
        return resources()

    fds_before, rss_before = fail(10)  # the publisher, its thread and the allocator's pools exist now
    publisher = relay._publisher
    fds_after, rss_after = fail(100)
    relay.close()
    print(f"100 failed relay attempts ({down}): fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after}")
    assert relay._publisher is None
    assert publisher is not None
    assert fds_after - fds_before <= 2, f"descriptors grew from {fds_before} to {fds_after}"
    assert rss_after - rss_before < 8 * 2**20, f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"
    assert OutboxEvent.objects.order_by("id")[0].attempts >= 110

    back = Relay()  # the broker is back
    assert back.run_once() == 500
    back.close()
    assert titles(outbox_mode, tap) == [f"r{n}" for n in range(500)]  # every row exactly once, in order


@pytest.mark.faults
def test_a_relay_over_a_stopped_broker_grows_nothing_and_publishes_once_it_is_back(outbox_mode: Broker) -> None:
    channel = outbox_mode.connection.channel()
    tap = f"{outbox_mode.exchange}.durable-tap"
    channel.exchange_declare(outbox_mode.exchange, "topic", durable=True)
    channel.queue_declare(tap, durable=True)  # survives the broker's restart
    channel.queue_bind(tap, outbox_mode.exchange, "#")
    outbox_mode.queues.append(tap)
    OutboxEvent.objects.bulk_create([outbox_row(n) for n in range(500)])
    relay = Relay(get_settings().model_copy(update={"outbox_batch": 500, "reconnect_max_delay": 0.05}))
    relay.run_once()  # connected
    relay.settings = relay.settings.model_copy(update={"publish_timeout": 0.02})
    OutboxEvent.objects.update(published_at=None)
    outbox_mode.drain(tap)
    rabbitmqctl("stop_app")
    try:
        for _ in range(10):
            with pytest.raises(PublishError):
                relay.run_once()
        gc.collect()
        fds_before, rss_before = resources()
        for _ in range(100):
            with pytest.raises(PublishError):
                relay.run_once()
        gc.collect()
        fds_after, rss_after = resources()
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    print(f"100 failed relay attempts (stopped app): fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after}")
    assert fds_after - fds_before <= 2, f"descriptors grew from {fds_before} to {fds_after}"
    assert rss_after - rss_before < 8 * 2**20, f"RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB"
    relay.settings = relay.settings.model_copy(update={"publish_timeout": 5.0})  # the same relay and publisher
    deadline = time.monotonic() + 30
    while OutboxEvent.objects.filter(published_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the relay's publisher never reconnected"
        with contextlib.suppress(PublishError):
            relay.run_once()
    relay.close()
    received = titles(outbox_mode, tap)
    assert sorted(set(received), key=lambda t: int(t[1:])) == [f"r{n}" for n in range(500)]  # at least once
    print(f"after the broker came back: {len(received)} messages for 500 rows")


def test_a_late_confirm_of_a_dropped_message_is_ignored(broker: Broker) -> None:
    tap = broker.tap()
    publisher = Publisher(get_settings())
    try:
        publisher.publish(_message(outbox_row(0)))
        publisher.flush(10)  # connected
        for n in range(1, 201):
            publisher.publish(_message(outbox_row(n)))
        assert publisher.discard_pending() > 0  # before their confirms came back
        assert publisher.pending == 0
        publisher.flush(0)  # nothing left to wait for
        publisher.publish(_message(outbox_row(201)))
        publisher.flush(10)  # the late confirms of the dropped ones neither fail nor take 201's place
        assert publisher.pending == 0
    finally:
        publisher.close(5)
    received = titles(broker, tap)
    assert received[0] == "r0"
    assert received[-1] == "r201"
    assert received.count("r201") == 1


def test_on_sqlite_send_never_fails_while_the_relay_waits_for_a_broker(settings: Any, broker: Broker) -> None:
    tap = broker.tap()
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "PUBLISH_MODE": "outbox",
        "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F",
        "PUBLISH_TIMEOUT": 5.5,  # longer than SQLite's 5 s busy timeout: a relay holding the lock fails send()
        "OUTBOX_POLL_INTERVAL": 0.2,
    }
    broadcaster.broadcast(post_save, sender=Article, event="tests.article_saved", schema=ArticleSaved)
    stop = threading.Event()
    relay = Relay(using="sqlite")
    relay_thread = threading.Thread(target=relay.run, args=(stop,))
    relay_thread.start()
    errors: list[BaseException] = []
    slowest: list[float] = [0.0]
    sender = threading.Thread(target=_send_for, args=(7.0, errors, slowest))
    sender.start()
    sender.join(30)
    stop.set()
    relay_thread.join(30)
    stop_web_relay()
    sent = Article.objects.using("sqlite").count()
    print(f"SQLite, broker unreachable: {sent} send()s in 7 s, slowest {slowest[0]:.2f} s, {len(errors)} failed")
    assert errors == [], f"send() failed {len(errors)} time(s), first: {errors[0]!r}"
    assert sent > 50
    assert slowest[0] < 4.0, "a send() waited on the relay"
    assert OutboxEvent.objects.using("sqlite").filter(published_at__isnull=True).count() == sent

    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": BROKER_URL}  # the broker is back
    back = Relay(using="sqlite")
    assert back.run_once() == sent
    back.close()
    assert titles(broker, tap) == [f"s{n}" for n in range(sent)]


def _send_for(seconds: float, errors: list[BaseException], slowest: list[float]) -> None:
    """Save articles on SQLite (outbox mode: one outbox row each), a commit every 10 ms or so."""
    deadline, n = time.monotonic() + seconds, 0
    try:
        while (started := time.monotonic()) < deadline:
            try:
                Article.objects.using("sqlite").create(title=f"s{n}")
                n += 1
            except OperationalError as exc:
                errors.append(exc)
            slowest[0] = max(slowest[0], time.monotonic() - started)
            time.sleep(0.01)
    finally:
        connections.close_all()


def outbox_row(n: int) -> OutboxEvent:
    """A pending outbox row of a `tests.article_saved` event for Article `n` (unsaved)."""
    from broadcaster.envelope import Envelope

    envelope = Envelope.new(source="tests", type="tests.article_saved")
    return OutboxEvent(
        event_id=envelope.id,
        event_type=envelope.type,
        headers=envelope.headers(),
        body=json.dumps({"instance": {"id": n, "title": f"r{n}"}}).encode(),
    )


def _run_and_close(relay: Relay) -> None:
    # Small batches so that the three relays interleave.
    relay.settings = relay.settings.model_copy(update={"outbox_batch": 20})
    try:
        relay.run_once()
    finally:
        relay.close()
        connections.close_all()


def _wait(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _null() -> Any:
    import io

    return io.StringIO()

"""Outbox mode stores events with the business change; the relay publishes each once, in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.db.models.signals import post_save
from pydantic import BaseModel, ConfigDict

import broadcaster
from broadcaster.exceptions import PublishError
from broadcaster.models import OutboxEvent
from broadcaster.outbox import Relay, stop_web_relay
from broadcaster.settings import get_settings
from tests.conftest import Broker
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])


class ArticleRef(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str


class ArticleSaved(BaseModel):
    instance: ArticleRef


@pytest.fixture
def outbox_mode(settings: Any, broker: Broker) -> Iterator[Broker]:
    settings.BROADCASTER = {**settings.BROADCASTER, "PUBLISH_MODE": "outbox", "OUTBOX_BATCH": 50}
    broadcaster.broadcast(post_save, sender=Article, event="tests.article_saved", schema=ArticleSaved)
    yield broker
    stop_web_relay()  # its thread must not outlive the test's database


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
    # The web process's relay, woken by the commits, may still be marking a batch it sent.
    stop_web_relay()
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
    OutboxEvent.objects.bulk_create([_row(n) for n in range(600)])
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


def _row(n: int) -> OutboxEvent:
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
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _null() -> Any:
    import io

    return io.StringIO()

"""The test kit lets users test each side, and the whole path, without a broker."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pika
import pytest
from django.db import transaction
from django.dispatch import Signal
from django.test import TestCase
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action
from broadcaster.settlement import Verdict
from broadcaster.testing import Capture, InMemoryBroker, capture_broadcasts, deliver
from tests.testapp.models import Article


class Priced(BaseModel):
    schema_version: ClassVar[str] = "2.0"
    sku: str
    price: Decimal


price_changed = Signal()
_UPCASTERS = {1: lambda v1: {"sku": v1["sku"], "price": v1["cents"] / 100}}


@pytest.fixture
def wired() -> list[dict[str, Any]]:
    broadcaster.broadcast(price_changed, event="catalog.price_changed", schema=Priced)
    calls: list[dict[str, Any]] = []
    broadcaster.subscribe("catalog.price_changed", schema=Priced, upcasters=dict(_UPCASTERS)).connect(
        lambda **kwargs: calls.append(kwargs), weak=False
    )
    return calls


def test_fixture_captures_without_a_broker(broadcasts: Capture, wired: list[Any]) -> None:
    price_changed.send(sender=None, sku="A", price="1.50")
    [event] = broadcasts
    assert event.type == "catalog.price_changed"
    assert event.payload == {"sku": "A", "price": "1.50"}
    assert event.envelope.schema_version == "2.0"
    assert wired == []  # captured only: nothing delivered


@pytest.mark.django_db(transaction=True)
def test_capture_honours_on_commit(wired: list[Any]) -> None:
    with capture_broadcasts() as sent:
        with transaction.atomic():
            price_changed.send(sender=None, sku="A", price=1)
            assert sent == []
        assert sent.types == ["catalog.price_changed"]

        def send_then_roll_back() -> None:
            with transaction.atomic():
                price_changed.send(sender=None, sku="B", price=1)
                raise LookupError

        with pytest.raises(LookupError):
            send_then_roll_back()
    assert [e.payload["sku"] for e in sent] == ["A"]


@pytest.mark.django_db(transaction=True)
def test_capture_also_works_in_outbox_mode(settings: Any, wired: list[Any]) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "PUBLISH_MODE": "outbox"}
    with capture_broadcasts() as sent, transaction.atomic():
        price_changed.send(sender=None, sku="A", price=1)
    assert sent.types == ["catalog.price_changed"]


def test_deliver_runs_receivers_as_the_daemon_would(wired: list[Any]) -> None:
    deliver("catalog.price_changed", Priced(sku="A", price=Decimal("2")))
    deliver("catalog.price_changed", {"sku": "B", "cents": 250}, schema_version="1.0")  # upcast
    assert [(c["sku"], c["price"]) for c in wired] == [("A", Decimal("2")), ("B", Decimal("2.5"))]
    assert wired[0]["sender"] is Priced


def test_deliver_surfaces_bad_events_and_receiver_errors(wired: list[Any]) -> None:
    with pytest.raises(broadcaster.RejectedMessage, match="schema-violation"):
        deliver("catalog.price_changed", {"sku": "A"})

    def boom(**_: object) -> None:
        raise KeyError("missing stock row")

    broadcaster.subscribe("catalog.other", schema=Priced).connect(boom, weak=False)
    with pytest.raises(KeyError, match="missing stock row"):
        deliver("catalog.other", {"sku": "A", "price": 1})
    outcome = deliver("catalog.other", {"sku": "A", "price": 1}, raise_errors=False)
    assert (outcome.action, outcome.reason) == (Action.RETRY, "receiver-error")


def test_in_memory_broker_runs_the_whole_path(wired: list[Any]) -> None:
    class Restocked(BaseModel):
        sku: str

    restocked = Signal()
    broadcaster.broadcast(restocked, event="stock.restocked", schema=Restocked)
    # A consumer-side receiver that broadcasts in turn: its event carries the causation.
    local = broadcaster.subscribe("catalog.price_changed", schema=Priced, upcasters=dict(_UPCASTERS))
    local.connect(lambda sku, **_: restocked.send(sender=None, sku=sku), weak=False)
    with InMemoryBroker() as broker:
        price_changed.send(sender=None, sku="A", price=3)
    assert [c["sku"] for c in wired] == ["A"]
    assert [o.action for o in broker.outcomes] == [Action.ACK]
    # The re-emission of catalog.price_changed was not published again; the caused event was.
    assert broker.types == ["catalog.price_changed", "stock.restocked"]
    assert broker[1].envelope.causation_id == broker[0].envelope.id


class DjangoTestCaseExample(TestCase):
    """What a user's TestCase looks like: on_commit callbacks run inside captureOnCommitCallbacks."""

    def test_article_creation_broadcasts(self) -> None:
        class Created(BaseModel):
            title: str

        created = Signal()
        broadcaster.broadcast(created, event="cms.created", schema=Created)
        with capture_broadcasts() as sent, self.captureOnCommitCallbacks(execute=True):
            article = Article.objects.create(title="Hi")
            created.send(sender=Article, title=article.title)
        self.assertEqual([e.payload for e in sent], [{"title": "Hi"}])  # noqa: PT009 - a TestCase, as users write them


class Placed(BaseModel):
    order_id: int


def _failing(event: str, *, fail: int = 99, **options: Any) -> list[int]:
    """Subscribe `event`; its receiver records each attempt and raises on the first `fail` of them."""
    attempts: list[int] = []

    def receiver(envelope: broadcaster.Envelope, **_: Any) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt <= fail:
            raise ConnectionError("downstream is down")

    broadcaster.subscribe(event, schema=Placed, **options).connect(receiver, weak=False)
    return attempts


def test_retries_wait_on_the_brokers_clock_with_the_delays_of_the_topology(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [1, 10]}
    attempts = _failing("shop.placed")
    with InMemoryBroker() as broker:
        broker.send("shop.placed", {"order_id": 1})
        [waiting] = broker.waiting
        assert (waiting.attempt, waiting.delay, waiting.due, waiting.queue) == (1, 1.0, 1.0, "tests.delay.1000ms")
        assert (waiting.reason, waiting.error, waiting.in_place) == ("receiver-error", "downstream is down", False)
        assert broker.advance(0.5) == 0  # not due yet
        assert broker.advance(0.5) == 1
        assert [(r.attempt, r.delay, r.due) for r in broker.waiting] == [(2, 10.0, 11.0)]
        assert broker.dead_letters == []
        assert broker.run_retries() == 1
    assert attempts == [1, 2, 3]
    assert broker.clock == 11.0
    assert [h.verdict for h in broker.handled] == [Verdict.RETRIED, Verdict.RETRIED, Verdict.DEAD_LETTERED]
    [dead] = broker.dead_letters
    assert (dead.type, dead.reason, dead.attempts) == ("shop.placed", "receiver-error", 3)
    assert dead.error == "downstream is down"
    assert dead.headers["x-broadcaster-exception"] == "builtins.ConnectionError"
    assert dead.payload == {"order_id": 1}
    assert broker.delivered == []


def test_an_instance_event_is_dead_lettered_at_once(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "INSTANCE_ID": "web-1"}
    attempts = _failing("cache.flushed", fanout="instance")
    with InMemoryBroker() as broker:
        broker.send("cache.flushed", {"order_id": 1})
    assert attempts == [1]
    assert broker.retries == []
    assert [h.queue for h in broker.handled] == ["tests.instance.web-1"]
    assert [(d.reason, d.attempts) for d in broker.dead_letters] == [("receiver-error", 1)]


def test_an_ordered_event_is_retried_in_place_in_the_partition_of_its_key(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [2, 4], "PARTITIONS": 4}
    attempts = _failing("shop.placed", fail=2, ordered=True)
    with InMemoryBroker() as broker:
        for key in ("a", "b", "a"):
            broker.send("shop.placed", {"order_id": 1}, partition_key=key)
    assert attempts == [1, 2, 3, 1, 2, 3, 1, 2, 3]
    assert [(r.attempt, r.delay, r.in_place) for r in broker.retries[:2]] == [(1, 2.0, True), (2, 4.0, True)]
    assert broker.waiting == []  # nothing went through a delay queue
    queues = [h.queue for h in broker.handled]
    assert queues[0] == queues[2]
    assert queues[0].startswith("tests.partition.")
    assert len(broker.delivered) == 3


def test_events_receivers_fire_are_delivered_after_the_event_that_caused_them() -> None:
    class Note(BaseModel):
        text: str

    noted = Signal()
    broadcaster.broadcast(noted, event="notes.noted", schema=Note)
    steps: list[str] = []

    def first(text: str, **_: Any) -> None:
        steps.append(f"start {text}")
        if text == "one":
            noted.send(None, text="two")
        steps.append(f"end {text}")

    broadcaster.subscribe("notes.noted", schema=Note).connect(first, weak=False)
    with InMemoryBroker() as broker:
        noted.send(None, text="one")
    assert steps == ["start one", "end one", "start two", "end two"]  # as the daemon: one delivery, then the next
    assert broker[1].envelope.causation_id == broker[0].envelope.id


def test_what_no_queue_takes_is_unrouted_or_kept_by_unrouted_queue(settings: Any) -> None:
    _failing("shop.placed")
    with InMemoryBroker() as broker:
        broker.send("shop.cancelled", {"order_id": 1})
    assert [m.type for m in broker.unrouted] == ["shop.cancelled"]
    assert broker.handled == []

    settings.BROADCASTER = {**settings.BROADCASTER, "UNROUTED_QUEUE": "parked"}
    with InMemoryBroker() as broker:
        broker.send("shop.cancelled", {"order_id": 1})
    assert broker.unrouted == []
    assert [m.payload for m in broker.queues["parked"]] == [{"order_id": 1}]


def test_signed_events_are_signed_as_the_publisher_signs_them(settings: Any) -> None:
    keys = {"tests": {"k1": "s" * 32}}
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "SIGNING_KEYS": keys,
        "SIGNING_KEY_ID": "k1",
        "REQUIRE_SIGNATURES": True,
    }
    placed = Signal()
    broadcaster.broadcast(placed, event="shop.placed", schema=Placed)
    attempts = _failing("shop.placed", fail=0)
    with InMemoryBroker() as broker:
        placed.send(None, order_id=1)
        broker.send("shop.placed", {"order_id": 2}, source="tests")  # unsigned
    assert attempts == [1]
    assert [d.reason for d in broker.dead_letters] == ["unsigned"]


def test_a_hostile_message_is_dead_lettered_with_the_daemons_reason() -> None:
    _failing("shop.placed")
    with InMemoryBroker() as broker:
        broker.send_raw("shop.placed", b"\x80\x04.", pika.BasicProperties(content_type="application/x-python-pickle"))
        broker.send_raw("shop.placed", b"{}", pika.BasicProperties(headers={"ce-type": "shop.placed"}))
    assert [d.reason for d in broker.dead_letters] == ["content-type", "bad-attribute"]
    assert [h.envelope for h in broker.handled] == [None, None]

"""broadcast() publishes a signal's validated kwargs after commit; subscribe() records re-emission."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import Signal
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

import broadcaster
from broadcaster import registry
from broadcaster.dispatch import handling
from broadcaster.envelope import Envelope
from broadcaster.exceptions import FlushTimeout, HopLimitExceeded, InvalidPayload, MessageTooLarge, RegistrationError
from broadcaster.registry import subscriptions
from broadcaster.testing import capture_broadcasts
from tests.conftest import Broker
from tests.testapp.models import Article


class OrderLine(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class OrderPlaced(BaseModel):
    schema_version: ClassVar[str] = "2.1"
    order_id: int
    total: Decimal
    lines: list[OrderLine]


class ArticleSnapshot(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str


class ArticleSaved(BaseModel):
    instance: ArticleSnapshot
    created: bool


order_placed = Signal()
LINES = [{"sku": "A-1", "quantity": 2}]


def publish_and_read(broker: Broker, send: Any) -> list[dict[str, Any]]:
    tap = broker.tap()
    send()
    broadcaster.flush(10)
    return [{"key": m.routing_key, "headers": m.headers, "body": json.loads(m.body)} for m in broker.drain(tap)]


def test_custom_signal_is_published_with_only_the_schema_fields(broker: Broker) -> None:
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    [message] = publish_and_read(
        broker, lambda: order_placed.send(sender=None, order_id=7, total="9.90", lines=LINES, secret="x")
    )
    assert message["key"] == "orders.order_placed"
    assert message["body"] == {"order_id": 7, "total": "9.90", "lines": LINES}
    assert message["headers"]["ce-schemaversion"] == "2.1"
    assert message["headers"]["ce-source"] == "tests"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sender", [Article, "testapp.Article"])
def test_model_signal_carries_the_instance(broker: Broker, sender: object) -> None:
    broadcaster.broadcast(post_save, sender=sender, event="tests.article_saved", schema=ArticleSaved)
    [message] = publish_and_read(broker, lambda: Article.objects.create(title="Hello"))
    assert message["body"]["created"] is True
    assert message["body"]["instance"]["title"] == "Hello"
    assert message["headers"]["ce-subject"] == "testapp.Article"


@pytest.mark.django_db(transaction=True)
def test_nothing_is_published_before_commit_or_after_rollback(broker: Broker) -> None:
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    tap = broker.tap()
    with transaction.atomic():
        order_placed.send(sender=None, order_id=1, total=1, lines=LINES)
        broadcaster.flush(5)
        assert broker.count(tap) == 0  # still inside the transaction
    broadcaster.flush(5)
    assert broker.count(tap) == 1

    def place_then_fail() -> None:
        with transaction.atomic():
            order_placed.send(sender=None, order_id=2, total=1, lines=LINES)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        place_then_fail()
    broadcaster.flush(5)
    assert [json.loads(m.body)["order_id"] for m in broker.drain(tap)] == [1]


def test_invalid_kwargs_raise_in_the_caller_naming_event_and_field(broker: Broker) -> None:
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    tap = broker.tap()
    with pytest.raises(InvalidPayload) as caught:
        order_placed.send(sender=None, order_id="seven", total=1, lines=[{"sku": "A", "quantity": 0}])
    text = str(caught.value)
    assert "orders.order_placed" in text
    assert "'order_id'" in text
    assert "'lines.0.quantity'" in text
    broadcaster.flush(5)
    assert broker.count(tap) == 0


class StrictRefund(BaseModel):
    """Refuses unknown fields, and reads one field under either of two names."""

    model_config = ConfigDict(extra="forbid")
    refund_id: int = Field(validation_alias=AliasChoices("refund_id", "refund"))
    amount: Decimal


class OpenRefund(StrictRefund):
    model_config = ConfigDict(extra="allow")


@pytest.mark.parametrize("schema", [StrictRefund, OpenRefund])
def test_a_schema_that_refuses_or_keeps_unknown_fields_gets_only_the_kwargs_it_names(
    broker: Broker, schema: type[BaseModel]
) -> None:
    refunded = Signal()
    broadcaster.broadcast(refunded, event="billing.refunded", schema=schema)
    [message] = publish_and_read(broker, lambda: refunded.send(sender=None, refund=5, amount="1.50", secret="x"))
    assert message["body"] == {"refund_id": 5, "amount": "1.50"}


def test_registration_is_idempotent(broker: Broker) -> None:
    for _ in range(3):
        broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    messages = publish_and_read(broker, lambda: order_placed.send(sender=None, order_id=1, total=1, lines=LINES))
    assert len(messages) == 1


def test_conflicting_registrations_are_refused() -> None:
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    with pytest.raises(RegistrationError, match="already broadcast with schema OrderPlaced"):
        broadcaster.broadcast(order_placed, event="orders.order_placed", schema=ArticleSaved)
    with pytest.raises(RegistrationError, match="needs a model signal"):
        broadcaster.broadcast(order_placed, sender="testapp.Article", event="a.b", schema=OrderPlaced)
    with pytest.raises(RegistrationError, match="wildcards"):
        broadcaster.broadcast(order_placed, event="orders.#", schema=OrderPlaced)
    with pytest.raises(RegistrationError, match="pydantic BaseModel"):
        broadcaster.broadcast(order_placed, event="a.b", schema=dict)  # type: ignore[arg-type]


def test_schema_version_must_be_major_minor() -> None:
    class Bad(BaseModel):
        schema_version: ClassVar[str] = "v2"

    with pytest.raises(RegistrationError, match=r"Bad.schema_version must be a 'major.minor'"):
        broadcaster.subscribe("a.b", schema=Bad)


def test_oversized_payload_raises_in_the_caller(settings: Any, broker: Broker) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "MAX_MESSAGE_BYTES": 1024}
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    with pytest.raises(MessageTooLarge, match="MAX_MESSAGE_BYTES"):
        order_placed.send(sender=None, order_id=1, total=1, lines=[{"sku": "X" * 2000, "quantity": 1}])


def test_reemitted_signal_is_not_published_again_but_caused_events_carry_the_chain(broker: Broker) -> None:
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    remote = broadcaster.subscribe("orders.order_placed", schema=OrderPlaced, signal=order_placed)
    follow_up = Signal()
    broadcaster.broadcast(follow_up, event="orders.follow_up", schema=OrderPlaced)
    remote.connect(lambda **kw: follow_up.send(sender=None, order_id=kw["order_id"], total=1, lines=LINES), weak=False)
    cause = Envelope.new(source="elsewhere", type="orders.order_placed")
    cause = Envelope(**{**{n: getattr(cause, n) for n in Envelope.__slots__}, "hops": 2})  # type: ignore[arg-type]

    def reemit() -> None:
        with handling(order_placed, cause):
            order_placed.send(sender=OrderPlaced, envelope=cause, order_id=5, total=1, lines=[])

    [message] = publish_and_read(broker, reemit)
    assert message["key"] == "orders.follow_up"
    assert message["headers"]["ce-causationid"] == cause.id
    assert message["headers"]["ce-hops"] == "3"


def test_hop_limit_stops_a_cycle(settings: Any, broker: Broker) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "MAX_HOPS": 2}
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    cause = Envelope.new(source="elsewhere", type="x.y")
    cause = Envelope(**{**{n: getattr(cause, n) for n in Envelope.__slots__}, "hops": 2})  # type: ignore[arg-type]
    with pytest.raises(HopLimitExceeded, match="MAX_HOPS"), handling(Signal(), cause):
        order_placed.send(sender=None, order_id=1, total=1, lines=LINES)


def test_subscribe_makes_and_returns_a_signal_once() -> None:
    local = broadcaster.subscribe("orders.order_placed", schema=OrderPlaced)
    assert isinstance(local, Signal)
    assert broadcaster.subscribe("orders.order_placed", schema=OrderPlaced) is local
    assert subscriptions()["orders.order_placed"].sender is OrderPlaced
    with pytest.raises(RegistrationError):
        broadcaster.subscribe("orders.order_placed", schema=ArticleSaved)


def test_datetime_fields_are_rfc3339(broker: Broker) -> None:
    class Stamped(BaseModel):
        at: datetime

    stamped = Signal()
    broadcaster.broadcast(stamped, event="t.stamped", schema=Stamped)
    [message] = publish_and_read(broker, lambda: stamped.send(sender=None, at=datetime(2026, 1, 1, 12)))
    assert message["body"] == {"at": "2026-01-01T12:00:00"}


@pytest.mark.django_db(transaction=True)
def test_full_buffer_fails_the_request_inside_its_transaction(settings: Any) -> None:
    from broadcaster import transport as publisher_module
    from broadcaster.exceptions import PublishBufferFull

    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:1/%2F",  # nothing is ever confirmed
        "MAX_BUFFER": 2,
        "PUBLISH_TIMEOUT": 0.2,
    }
    broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
    try:
        with transaction.atomic():  # two events fit; both are taken at commit
            order_placed.send(sender=None, order_id=1, total=1, lines=LINES)
            order_placed.send(sender=None, order_id=2, total=1, lines=LINES)
        publisher = publisher_module.get_publisher()
        assert publisher.pending == 2

        def third_order() -> None:
            with transaction.atomic():
                Article.objects.create(title="order 3's row")
                order_placed.send(sender=None, order_id=3, total=1, lines=LINES)

        with pytest.raises(PublishBufferFull):
            third_order()
        assert not Article.objects.exists()  # the request failed before its commit: nothing half-done
        assert publisher.pending == 2
    finally:
        with contextlib.suppress(FlushTimeout):
            publisher_module.reset_publisher(timeout=0)  # nothing is ever confirmed: give up


@pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])
def test_an_event_waits_for_the_commit_of_its_own_alias_thread_and_task_only() -> None:
    signal = Signal()
    broadcaster.broadcast(signal, event="orders.atomic_probe", schema=OrderPlaced)

    def send(order_id: int, using: str = "default") -> None:
        signal.send(sender=None, order_id=order_id, total=1, lines=LINES, using=using)

    with capture_broadcasts() as captured:
        with transaction.atomic():
            send(1)
            send(2, using="sqlite")  # not in a transaction on that database: at once
            thread = threading.Thread(target=send, args=(3,))  # another thread: not in this transaction
            thread.start()
            thread.join()

            async def under_an_event_loop() -> None:
                send(4)  # a task has connections of its own

            asyncio.run(under_an_event_loop())
            assert [e.payload["order_id"] for e in captured] == [2, 3, 4]
        assert [e.payload["order_id"] for e in captured] == [2, 3, 4, 1]  # on commit
        with transaction.atomic(using="sqlite"):
            send(5, using="sqlite")
            assert len(captured) == 4
        assert captured[-1].payload["order_id"] == 5


def test_isolated_undoes_the_blocks_registrations_and_keeps_the_earlier_ones() -> None:
    kept, dropped = Signal(), Signal()
    broadcaster.broadcast(kept, event="orders.kept", schema=OrderPlaced)
    with registry.isolated():
        broadcaster.broadcast(dropped, event="orders.dropped", schema=OrderPlaced)
        broadcaster.subscribe("orders.dropped", schema=OrderPlaced)
        assert {b.event for b in registry.broadcasts()} >= {"orders.kept", "orders.dropped"}
    assert "orders.dropped" not in {b.event for b in registry.broadcasts()}
    assert "orders.dropped" not in registry.subscriptions()
    with capture_broadcasts() as captured:
        dropped.send(sender=None, order_id=1, total=1, lines=LINES)  # no receiver left
        kept.send(sender=None, order_id=2, total=1, lines=LINES)
    assert captured.types == ["orders.kept"]


def test_reset_forgets_every_registration_and_isolated_brings_the_earlier_ones_back() -> None:
    signal = Signal()
    broadcaster.broadcast(signal, event="orders.before_reset", schema=OrderPlaced)
    with registry.isolated():
        registry.reset()
        assert registry.broadcasts() == []
        assert registry.subscriptions() == {}
        with capture_broadcasts() as captured:
            signal.send(sender=None, order_id=1, total=1, lines=LINES)
        assert captured == []
    with capture_broadcasts() as captured:
        signal.send(sender=None, order_id=2, total=1, lines=LINES)
    assert captured.types == ["orders.before_reset"]

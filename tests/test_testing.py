"""The test kit lets users test each side, and the whole path, without a broker."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.db import transaction
from django.dispatch import Signal
from django.test import TestCase
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action
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

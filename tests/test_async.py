"""Broadcast signals in async code: asend() and asend_robust() publish, async receivers run."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action, current_envelope
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import InvalidPayload
from broadcaster.testing import Capture, capture_broadcasts, deliver
from broadcaster.transport import use_transport
from tests.testapp.models import Article


class Shipped(BaseModel):
    parcel: int


class SlowTransport(Capture):
    """A publisher whose publish() waits, as one with a full buffer does (PUBLISH_TIMEOUT)."""

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        time.sleep(0.3)
        super().publish(message, wait=wait)


@pytest.fixture
def shipped() -> Signal:
    signal = Signal()
    broadcaster.broadcast(signal, event="async.shipped", schema=Shipped)
    return signal


async def _ticks_while(work: Any) -> tuple[Any, int]:
    """Run `work` while a 10 ms ticker runs on the same loop; its result and the ticks."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        done.set()
        await task


def test_asend_publishes_without_blocking_the_event_loop(shipped: Signal) -> None:
    with use_transport(SlowTransport()) as transport:
        responses, ticks = asyncio.run(_ticks_while(shipped.asend(sender=None, parcel=7)))
    assert [captured.payload for captured in transport] == [{"parcel": 7}]
    assert [response for _, response in responses] == [None]
    assert ticks >= 10  # the loop went on for the 0.3 s publish() waited


@pytest.mark.django_db(transaction=True)
def test_asend_inside_a_transaction_publishes_after_commit(shipped: Signal) -> None:
    async def ship(parcel: int) -> None:
        await shipped.asend(sender=None, parcel=parcel)

    with capture_broadcasts() as captured:
        with transaction.atomic():
            async_to_sync(ship)(1)
            assert captured == []  # not before the commit
        assert [event.payload for event in captured] == [{"parcel": 1}]
        with pytest.raises(RuntimeError, match="roll back"):
            _ship_and_roll_back(ship)
    assert [event.payload for event in captured] == [{"parcel": 1}]  # a rollback publishes nothing


def _ship_and_roll_back(ship: Any) -> None:
    with transaction.atomic():
        async_to_sync(ship)(2)
        raise RuntimeError("roll back")


def test_asend_robust_reports_an_invalid_payload_and_runs_the_other_receivers(
    shipped: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[object] = []

    async def also(sender: object, **kwargs: Any) -> None:
        heard.append(kwargs["parcel"])

    shipped.connect(also)
    with capture_broadcasts() as captured, caplog.at_level(logging.ERROR, "django.dispatch"):
        responses = asyncio.run(shipped.asend_robust(sender=None, parcel="not a number"))
    errors = [response for _, response in responses if isinstance(response, Exception)]
    assert [type(error) for error in errors] == [InvalidPayload]
    assert heard == ["not a number"]
    assert captured == []
    assert "Broadcast[async.shipped]" in caplog.text  # Django logs the failing receiver by name


def test_send_robust_reports_an_invalid_payload_too(shipped: Signal) -> None:
    with capture_broadcasts() as captured:
        responses = shipped.send_robust(sender=None, parcel="not a number")
    assert [type(response) for _, response in responses] == [InvalidPayload]
    assert captured == []


def test_asend_from_an_async_receiver_of_a_remote_event_carries_its_cause(shipped: Signal) -> None:
    async def forward(sender: object, parcel: int, **kwargs: Any) -> None:
        await shipped.asend(sender=None, parcel=parcel + 1)

    broadcaster.subscribe("async.received", schema=Shipped).connect(forward, weak=False)
    with capture_broadcasts() as captured:
        outcome = deliver("async.received", {"parcel": 1})
    assert [event.payload for event in captured] == [{"parcel": 2}]
    assert captured[0].envelope.causation_id == outcome.envelope.id  # type: ignore[union-attr]
    assert captured[0].envelope.hops == 1


def test_sync_and_async_receivers_of_a_remote_event_all_run() -> None:
    ran: list[tuple[str, int, str | None, bool]] = []

    def sync_receiver(sender: object, parcel: int, **kwargs: Any) -> None:
        ran.append(("sync", parcel, _current_id(), _in_loop()))

    async def async_receiver(sender: object, parcel: int, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        ran.append(("async", parcel, _current_id(), _in_loop()))

    local = broadcaster.subscribe("async.mixed", schema=Shipped)
    local.connect(sync_receiver, weak=False)
    local.connect(async_receiver, weak=False)
    outcome = deliver("async.mixed", {"parcel": 5})
    assert outcome.action is Action.ACK
    envelope_id = outcome.envelope.id  # type: ignore[union-attr]
    assert sorted(ran) == [("async", 5, envelope_id, True), ("sync", 5, envelope_id, False)]


def test_a_failing_async_receiver_retries_the_event() -> None:
    async def broken(sender: object, **kwargs: Any) -> None:
        raise LookupError("parcel not found")

    broadcaster.subscribe("async.broken", schema=Shipped).connect(broken, weak=False)
    outcome = deliver("async.broken", {"parcel": 5}, raise_errors=False)
    assert (outcome.action, outcome.reason) == (Action.RETRY, "receiver-error")
    assert outcome.exception == "builtins.LookupError"


@pytest.mark.django_db(transaction=True)
def test_an_async_receivers_orm_work_is_part_of_the_inbox_transaction() -> None:
    attempts: list[int] = []

    async def record(sender: object, parcel: int, envelope: Any, **kwargs: Any) -> None:
        await sync_to_async(Article.objects.create)(title=f"parcel {parcel}")
        attempts.append(envelope.attempt)
        if len(attempts) == 1:
            raise LookupError("first attempt fails after writing")

    broadcaster.subscribe("async.inbox", schema=Shipped, inbox=True).connect(record, weak=False)
    envelope = Envelope.new(source="tests", type="async.inbox")
    first = deliver("async.inbox", {"parcel": 3}, envelope=envelope, raise_errors=False)
    assert first.action is Action.RETRY
    assert not Article.objects.exists()  # rolled back with the inbox row
    assert deliver("async.inbox", {"parcel": 3}, envelope=envelope, attempt=2).action is Action.ACK
    assert deliver("async.inbox", {"parcel": 3}, envelope=envelope, attempt=3).action is Action.ACK  # a redelivery
    assert list(Article.objects.values_list("title", flat=True)) == ["parcel 3"]
    assert attempts == [1, 2]  # the redelivery did not run the receiver again


def _current_id() -> str | None:
    envelope = current_envelope()
    return envelope.id if envelope else None


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

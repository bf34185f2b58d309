"""The publisher's bookkeeping without a broker: order, the confirm window, republishing, flush, the bound."""

from __future__ import annotations

import json
import threading
import time

import pytest

from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import FlushTimeout, PublishBufferFull
from broadcaster.outgoing import LINGER, Batch, Outgoing


def message(n: int) -> OutboundMessage:
    return OutboundMessage(Envelope.new(source="tests", type="tests.numbered"), json.dumps({"n": n}).encode())


def numbers(messages: list[OutboundMessage]) -> list[int]:
    return [json.loads(m.body)["n"] for m in messages]


def connected(max_buffer: int = 100, timeout: float = 0.2) -> Outgoing:
    outgoing = Outgoing(max_buffer, timeout, "amqp://guest:***@broker/")
    outgoing.connected()
    return outgoing


def take(outgoing: Outgoing, now: float = 0.0) -> Batch:
    batch = outgoing.take(now)
    assert batch is not None
    return batch


def test_nothing_is_handed_out_before_a_channel_is_ready_and_nobody_is_woken() -> None:
    outgoing = Outgoing(100, 1.0)
    assert outgoing.put(message(0)) is False  # the connection's first drain takes it
    assert outgoing.take(0.0) is None
    outgoing.connected()
    assert numbers(take(outgoing).messages) == [0]


def test_a_batch_is_the_whole_buffer_in_order_and_stays_pending_until_acked() -> None:
    outgoing = connected()
    for n in range(5):
        outgoing.put(message(n))
    batch = take(outgoing)
    assert numbers(batch.messages) == numbers(batch.fresh) == [0, 1, 2, 3, 4]
    assert outgoing.pending == 5
    assert numbers(outgoing.confirm(2, multiple=True)) == [0, 1]  # tags start at 1
    assert numbers(outgoing.confirm(4, multiple=False)) == [3]
    assert outgoing.pending == 2
    assert numbers(outgoing.confirm(5, multiple=True)) == [2, 4]
    assert outgoing.pending == 0


def test_a_nacked_message_goes_back_ahead_of_newer_ones_and_is_not_counted_as_fresh() -> None:
    outgoing = connected()
    for n in range(4):
        outgoing.put(message(n))
    take(outgoing)
    outgoing.put(message(4))
    assert numbers(outgoing.confirm(3, multiple=True, nacked=True)) == [0, 1, 2]
    assert outgoing.pending == 5
    batch = take(outgoing)
    assert numbers(batch.messages) == [0, 1, 2, 4]
    assert numbers(batch.fresh) == [4]
    assert numbers(outgoing.confirm(7, multiple=True)) == [3, 0, 1, 2]  # 3 kept tag 4; 0, 1, 2 got 5-7
    assert numbers(outgoing.confirm(8, multiple=False)) == [4]


def test_a_lost_connection_republishes_every_unconfirmed_message_first_in_order() -> None:
    outgoing = connected()
    for n in range(3):
        outgoing.put(message(n))
    take(outgoing)
    outgoing.confirm(1, multiple=False)
    outgoing.put(message(3))
    outgoing.lost()
    assert outgoing.take(1.0) is None  # no channel: nothing handed out
    assert outgoing.pending == 3
    outgoing.connected()  # a new channel: tags start again at 1
    batch = take(outgoing)
    assert numbers(batch.messages) == [1, 2, 3]
    assert numbers(batch.fresh) == [3]
    assert numbers(outgoing.confirm(3, multiple=True)) == [1, 2, 3]


def test_paused_keeps_the_unconfirmed_window_until_the_connection_is_lost() -> None:
    outgoing = connected()
    outgoing.put(message(0))
    take(outgoing)
    outgoing.paused()
    outgoing.put(message(1))
    assert outgoing.take(0.0) is None
    outgoing.lost()
    outgoing.connected()
    assert numbers(take(outgoing).messages) == [0, 1]


def test_a_confirm_of_a_discarded_message_is_ignored() -> None:
    outgoing = connected()
    for n in range(3):
        outgoing.put(message(n))
    take(outgoing)
    assert outgoing.discard() == 3
    assert outgoing.pending == 0
    outgoing.put(message(3))
    take(outgoing)  # tag 4
    assert outgoing.confirm(3, multiple=True) == []  # the late confirm of the dropped ones
    assert outgoing.pending == 1
    assert numbers(outgoing.confirm(4, multiple=False)) == [3]


def test_the_io_thread_is_woken_once_then_ticks_until_it_lingers_out() -> None:
    outgoing = connected()
    assert outgoing.put(message(0)) is True  # resting: wake it
    assert outgoing.put(message(1)) is False  # a drain is due already
    assert take(outgoing, now=10.0).tick is True
    assert outgoing.put(message(2)) is False  # ticking: no wake-up per event
    assert take(outgoing, now=10.1).tick is True
    assert take(outgoing, now=10.1 + LINGER / 2).tick is True  # empty, but not long after the last event
    assert take(outgoing, now=10.1 + LINGER * 1.1).tick is False  # rests
    assert outgoing.put(message(3)) is True


def test_a_wake_up_that_finds_the_channel_closing_hands_out_nothing_and_rearms() -> None:
    outgoing = connected()
    assert outgoing.put(message(0)) is True
    assert outgoing.take(0.0, channel_open=False) is None
    assert outgoing.put(message(1)) is True  # the next event wakes the thread again
    assert numbers(take(outgoing).messages) == [0, 1]


def test_flush_returns_once_everything_is_confirmed_and_times_out_otherwise() -> None:
    outgoing = connected()
    outgoing.put(message(0))
    take(outgoing)
    with pytest.raises(FlushTimeout, match="1 message"):
        outgoing.flush(0.05)
    threading.Timer(0.05, outgoing.confirm, (1, False)).start()
    started = time.monotonic()
    outgoing.flush(5)
    assert time.monotonic() - started < 2
    outgoing.flush(0)  # nothing pending: at once


def test_a_full_buffer_waits_for_room_then_raises_without_the_password() -> None:
    outgoing = connected(max_buffer=2, timeout=0.1)
    outgoing.put(message(0))
    outgoing.put(message(1))
    with pytest.raises(PublishBufferFull, match=r"MAX_BUFFER=2") as caught:
        outgoing.put(message(2))
    assert "amqp://guest:***@broker/" in str(caught.value)
    with pytest.raises(PublishBufferFull):
        outgoing.ensure_room()
    outgoing.put(message(2), wait=False)  # after a commit: taken over the bound
    assert outgoing.pending == 3


def test_a_confirm_makes_room_for_a_waiting_caller() -> None:
    outgoing = connected(max_buffer=1, timeout=5)
    outgoing.put(message(0))
    take(outgoing)
    threading.Timer(0.05, outgoing.confirm, (1, False)).start()
    outgoing.put(message(1))  # waits for the confirm, not for PUBLISH_TIMEOUT
    assert outgoing.pending == 1

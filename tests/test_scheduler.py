"""The daemon's scheduling without a broker: per-key lanes and acks of deliveries that finish out of order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.scheduler import Acks, AckWindow, Lanes


def test_free_items_run_in_arrival_order_and_keyed_ones_one_at_a_time() -> None:
    lanes: Lanes[str] = Lanes()
    for item, key in [("a1", "a"), ("free1", None), ("a2", "a"), ("b1", "b"), ("a3", "a")]:
        lanes.add(item, key)
    assert [lanes.take(), lanes.take(), lanes.take()] == ["a1", "free1", "b1"]
    assert lanes.take() is None  # a2 waits for a1
    lanes.done("a")
    assert lanes.take() == "a2"
    lanes.done("b")
    lanes.done("a")
    assert lanes.take() == "a3"
    lanes.done("a")
    assert len(lanes) == 0


def test_clear_forgets_waiting_items_and_frees_the_lanes_of_items_not_started() -> None:
    lanes: Lanes[str] = Lanes()
    lanes.add("a1", "a")
    lanes.add("b1", "b")
    assert lanes.take() == "a1"  # running
    lanes.add("a2", "a")
    lanes.clear()  # b1 (ready, not started) and a2 (waiting) are forgotten
    lanes.add("b2", "b")
    assert lanes.take() == "b2"  # b's lane is free: nothing of b runs
    lanes.add("a3", "a")
    assert lanes.take() is None  # a1 still runs
    lanes.done("a")
    assert lanes.take() == "a3"


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=40), seed=st.integers())
def test_lanes_never_run_two_items_of_one_key_and_keep_each_keys_order(keys: list[str | None], seed: int) -> None:
    rng = random.Random(seed)
    lanes: Lanes[int] = Lanes()
    for index, key in enumerate(keys):
        lanes.add(index, key)
    running: dict[int, str | None] = {}
    finished: list[int] = []
    while len(finished) < len(keys):
        item = None if running and rng.random() < 0.4 else lanes.take()
        if item is None:
            assert running, "nothing runs and nothing may start: a lane is stuck"
            done = rng.choice(sorted(running))
            finished.append(done)
            lanes.done(running.pop(done))
            continue
        assert keys[item] is None or keys[item] not in running.values()
        running[item] = keys[item]
    for key in ("a", "b", "c"):
        mine = [index for index in finished if keys[index] == key]
        assert mine == sorted(mine)


def test_in_order_settlement_is_one_multiple_ack() -> None:
    window = AckWindow()
    for tag in (1, 2, 3):
        window.delivered(tag)
    assert window.settle([1, 2, 3]) == Acks(up_to=3)
    assert len(window) == 0


def test_a_delivery_finishing_ahead_of_a_slow_one_is_acked_alone_at_once() -> None:
    window = AckWindow()
    for tag in (1, 2, 3, 4):
        window.delivered(tag)
    assert window.settle([3]) == Acks(single=(3,))
    assert window.settle([1]) == Acks(up_to=1)
    assert window.settle([2, 4]) == Acks(up_to=4)  # 3 was answered already: covered harmlessly
    assert len(window) == 0


def test_a_nacked_tag_is_never_acked() -> None:
    window = AckWindow()
    for tag in (1, 2):
        window.delivered(tag)
    assert window.settle([1], already=frozenset({1})) == Acks()
    assert window.settle([2]) == Acks(up_to=2)


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 30), seed=st.integers(), nacked=st.sets(st.integers(1, 30)))
def test_every_tag_is_answered_exactly_once_whatever_the_order(count: int, seed: int, nacked: set[int]) -> None:
    """Replays the acks against a model of the broker's unacked set: nothing acked twice or too early."""
    rng = random.Random(seed)
    window = AckWindow()
    tags = list(range(1, count + 1))
    for tag in tags:
        window.delivered(tag)
    order = tags[:]
    rng.shuffle(order)
    outstanding, settled = set(tags), set()
    while order:
        batch = [order.pop() for _ in range(min(len(order), rng.randint(1, 4)))]
        answered_alone = frozenset(tag for tag in batch if tag in nacked)
        outstanding -= answered_alone  # the daemon nacked them itself
        settled.update(batch)
        acks = window.settle(batch, already=answered_alone)
        if acks.up_to is not None:
            covered = {tag for tag in outstanding if tag <= acks.up_to}
            assert covered <= settled, "a multiple-ack covered a delivery still running"
            assert acks.up_to in outstanding, "a multiple-ack must name an unanswered tag"
            outstanding -= covered
        for tag in acks.single:
            assert tag in outstanding, f"tag {tag} answered twice"
            assert tag in settled
            outstanding.discard(tag)
    assert not outstanding, "every settled tag was answered"

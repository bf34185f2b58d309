"""One set of scenarios, run against the test kit's InMemoryBroker and against RabbitMQ with a real daemon.

Each scenario asserts the same things of both: what the receivers saw, the daemon's
verdicts, the retries (attempt, delay queue, reason) and the dead letters (reason,
attempts). A scenario that passes on one and fails on the other is a difference
between the test kit and production. The ``rabbitmq`` runs are marked ``broker``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, ClassVar

import pika
import pytest
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.envelope import Envelope
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.testing import topic_matches
from broadcaster.topology import Topology
from tests.behaviour_kits import OTHER, Kit, MemoryKit, RabbitKit
from tests.conftest import Broker

DELAYS = [0.05, 0.1]


class Placed(BaseModel):
    schema_version: ClassVar[str] = "2.0"
    order_id: int
    total: Decimal


class Revised(BaseModel):
    sku: str
    revision: int


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
def kit(request: pytest.FixtureRequest, settings: Any) -> Iterator[Kit]:
    """The same scenario on the in-memory broker, or on RabbitMQ with a daemon (marked ``broker``)."""
    instance = f"i{uuid.uuid4().hex[:8]}"
    options = {"RETRY_DELAYS": DELAYS, "PARTITIONS": 2, "MAX_HOPS": 3, "INSTANCE_ID": instance}
    if request.param == "memory":
        settings.BROADCASTER = {**settings.BROADCASTER, **options}
        memory = MemoryKit()
        yield memory
        memory.stop()
        return
    broker: Broker = request.getfixturevalue("broker")
    settings.BROADCASTER = {**settings.BROADCASTER, **options}
    real = RabbitKit(broker)
    try:
        yield real
    finally:
        real.stop()


class Calls(list[dict[str, Any]]):
    """What a receiver was called with; it raises `fail` on the attempts listed."""

    def __init__(self, fail_on: tuple[int, ...] = (), error: str = "stock service down") -> None:
        super().__init__()
        self.fail_on, self.error = fail_on, error

    def __call__(self, envelope: Envelope, **fields: Any) -> None:
        self.append({"attempt": envelope.attempt, "envelope": envelope, **fields})
        if envelope.attempt in self.fail_on:
            raise ConnectionError(self.error)


def _subscribe(event: str, calls: Calls, **options: Any) -> None:
    broadcaster.subscribe(event, schema=options.pop("schema", Placed), **options).connect(calls, weak=False)


def _delay_queue(index: int) -> str:
    return Topology.for_settings(get_settings()).retry_queues[index]


ORDER = {"order_id": 7, "total": "12.50"}


def test_routing_by_the_services_bindings(kit: Kit) -> None:
    calls = Calls()
    _subscribe("shop.order_placed", calls)
    kit.start()
    kit.bind("audit.#")  # a binding of the operator's own: '#' is zero or more words

    assert kit.send("shop.order_placed", ORDER, schema_version="2.0")
    assert not kit.send("shop.order_cancelled", ORDER)  # nobody binds it: returned to the publisher
    assert not kit.send("shop.order_placed.v2", ORDER)  # a binding is no prefix
    assert kit.send("audit", ORDER)  # audit.# matches no word after 'audit' too
    kit.finish(handled=2)

    assert [(c["order_id"], c["total"]) for c in calls] == [(7, Decimal("12.50"))]
    assert kit.verdicts() == {"acked": 1, "dead-lettered": 1}
    assert kit.dead_letters() == [("audit", "unknown-event", 1)]


def test_unknown_event_from_a_stale_wildcard_binding(kit: Kit) -> None:
    _subscribe("shop.order_placed", Calls())
    kit.start()
    kit.bind("legacy.*")  # left from an earlier release; '*' is exactly one word

    assert kit.send("legacy.thing", ORDER)
    assert not kit.send("legacy.thing.more", ORDER)
    assert not kit.send("legacy", ORDER)
    kit.finish(handled=1)

    assert kit.verdicts() == {"dead-lettered": 1}
    assert kit.dead_letters() == [("legacy.thing", "unknown-event", 1)]
    assert kit.retries() == []


def test_retry_then_success(kit: Kit) -> None:
    calls = Calls(fail_on=(1,))
    _subscribe("shop.order_placed", calls)
    kit.start()

    kit.send("shop.order_placed", ORDER, schema_version="2.0")
    kit.finish(handled=2)

    assert [c["attempt"] for c in calls] == [1, 2]
    assert calls[0]["envelope"].id == calls[1]["envelope"].id  # the same event, delivered again
    assert kit.retries() == [(1, _delay_queue(0), "receiver-error")]
    assert kit.verdicts() == {"retried": 1, "acked": 1}
    assert kit.dead_letters() == []


def test_exhausted_retries_dead_letter_with_the_reason(kit: Kit) -> None:
    calls = Calls(fail_on=(1, 2, 3))
    _subscribe("shop.order_placed", calls)
    kit.start()

    kit.send("shop.order_placed", ORDER, schema_version="2.0")
    kit.finish(handled=3)

    assert [c["attempt"] for c in calls] == [1, 2, 3]  # RETRY_DELAYS has two entries
    assert kit.retries() == [(1, _delay_queue(0), "receiver-error"), (2, _delay_queue(1), "receiver-error")]
    assert kit.verdicts() == {"retried": 2, "dead-lettered": 1}
    assert kit.dead_letters() == [("shop.order_placed", "receiver-error", 3)]
    [headers] = kit.dead_letter_headers()
    assert (headers["x-broadcaster-error"], headers["x-broadcaster-exception"]) == (
        "stock service down",
        "builtins.ConnectionError",
    )
    assert sorted(name for name in headers if not name.startswith("ce-")) == [
        "x-broadcaster-attempt",
        "x-broadcaster-attempts",
        "x-broadcaster-error",
        "x-broadcaster-exception",
        "x-broadcaster-first-failure",
        "x-broadcaster-last-failure",
        "x-broadcaster-queue",
        "x-broadcaster-reason",
        "x-broadcaster-routing-key",
        "x-broadcaster-seal",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
    ]
    requeue = Topology.for_settings(get_settings()).requeue_exchange
    # Written by the broker when each delay queue's TTL ran out: the latest first.
    assert [(d["queue"], d["reason"], d["count"], d["exchange"], d["routing-keys"]) for d in headers["x-death"]] == [
        (_delay_queue(1), "expired", 1, requeue, [_delay_queue(1)]),
        (_delay_queue(0), "expired", 1, requeue, [_delay_queue(0)]),
    ]
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == (_delay_queue(0), "expired")


def test_a_delay_used_twice_counts_twice_in_one_x_death_entry(kit: Kit, settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "RETRY_DELAYS": [0.05, 0.05]}
    calls = Calls(fail_on=(1, 2, 3))
    _subscribe("shop.order_placed", calls)
    kit.start()

    kit.send("shop.order_placed", ORDER, schema_version="2.0")
    kit.finish(handled=3)

    assert kit.retries() == [(1, _delay_queue(0), "receiver-error"), (2, _delay_queue(0), "receiver-error")]
    [headers] = kit.dead_letter_headers()
    assert [(d["queue"], d["count"]) for d in headers["x-death"]] == [(_delay_queue(0), 2)]


@pytest.mark.parametrize(
    ("body", "options", "reason"),
    [
        ({"order_id": "seven", "total": "1"}, {"schema_version": "2.0"}, "schema-violation"),
        (b"{not json", {"schema_version": "2.0"}, "not-json"),
        (ORDER, {"schema_version": "3.0"}, "unsupported-schema-version"),  # a newer major
        (ORDER, {"schema_version": "1.0"}, "unsupported-schema-version"),  # older, no upcaster
        (ORDER, {"schema_version": "2.0", "source": "intruder"}, "unexpected-source"),
        (ORDER, {"schema_version": "2.0", "headers": {"ce-specversion": "0.3"}}, "bad-attribute"),
    ],
    ids=["schema-violation", "not-json", "newer-major", "older-major", "unexpected-source", "bad-attribute"],
)
def test_a_message_that_can_never_succeed_is_dead_lettered_at_once(
    kit: Kit, body: Any, options: dict[str, Any], reason: str
) -> None:
    calls = Calls()
    _subscribe("shop.order_placed", calls, sources=[OTHER])
    kit.start()

    kit.send("shop.order_placed", body, **options)
    kit.finish(handled=1)

    assert calls == []
    assert kit.retries() == []
    assert kit.verdicts() == {"dead-lettered": 1}
    assert kit.dead_letters() == [("shop.order_placed", reason, 1)]


def test_a_failing_instance_event_is_dead_lettered_at_once(kit: Kit) -> None:
    calls = Calls(fail_on=(1,))
    _subscribe("cache.flushed", calls, fanout="instance")
    kit.start()

    assert kit.send("cache.flushed", ORDER, schema_version="2.0")
    kit.finish(handled=1)

    assert [c["attempt"] for c in calls] == [1]  # an instance queue has no delay queues
    assert kit.retries() == []
    assert kit.verdicts() == {"dead-lettered": 1}
    assert kit.dead_letters() == [("cache.flushed", "receiver-error", 1)]


def test_what_no_queue_takes_is_kept_by_unrouted_queue(kit: Kit, settings: Any) -> None:
    parked = f"parked-{uuid.uuid4().hex[:8]}"
    settings.BROADCASTER = {**settings.BROADCASTER, "UNROUTED_QUEUE": parked}
    _subscribe("shop.order_placed", Calls())
    kit.start()

    assert kit.send("shop.order_cancelled", {"order_id": 1})  # taken by the alternate exchange's queue
    assert kit.send("shop.order_placed", ORDER, schema_version="2.0")
    kit.finish(handled=1)

    assert kit.kept(parked) == [{"order_id": 1}]
    assert kit.verdicts() == {"acked": 1}


def test_signed_events(kit: Kit, settings: Any) -> None:
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "SIGNING_KEYS": {"tests": {"k1": "s" * 32}, OTHER: {"k9": "t" * 32}},
        "SIGNING_KEY_ID": "k1",
        "REQUIRE_SIGNATURES": True,
    }
    placed = Signal()
    broadcaster.broadcast(placed, event="shop.order_placed", schema=Placed)
    calls = Calls()
    _subscribe("shop.order_placed", calls)
    kit.start()

    placed.send(None, order_id=1, total="1.00")  # signed by this service's publisher
    kit.send("shop.order_placed", ORDER, schema_version="2.0")  # unsigned
    kit.finish(handled=2)

    assert [c["order_id"] for c in calls] == [1]
    assert kit.verdicts() == {"acked": 1, "dead-lettered": 1}
    assert kit.dead_letters() == [("shop.order_placed", "unsigned", 1)]


def test_loop_prevention_and_the_causation_chain(kit: Kit) -> None:
    ping, pong = Signal(), Signal()
    broadcaster.broadcast(ping, event="relay.ping", schema=Placed)  # this service also publishes pings
    broadcaster.broadcast(pong, event="relay.pong", schema=Placed)
    broadcaster.subscribe("relay.ping", schema=Placed, signal=ping)  # ... and re-emits remote ones on `ping`
    ping.connect(lambda envelope, order_id, total, **_: pong.send(None, order_id=order_id + 1, total=total), weak=False)
    kit.start()

    sent = kit.send("relay.ping", ORDER, schema_version="2.0")
    kit.finish(handled=1)

    assert sent
    [answer] = kit.published()  # the re-emitted ping was not published again; the pong it caused was
    assert (answer.type, answer.hops) == ("relay.pong", 1)
    assert answer.causation_id is not None
    assert kit.verdicts() == {"acked": 1}


def test_a_cycle_stops_at_the_hop_limit(kit: Kit) -> None:
    again = Signal()
    broadcaster.broadcast(again, event="loop.ping", schema=Placed)
    calls = Calls()
    _subscribe("loop.ping", calls)
    calls_then_again = Calls()

    def echo(envelope: Envelope, order_id: int, total: Decimal, **_: Any) -> None:
        calls_then_again.append({"hops": envelope.hops})
        again.send(None, order_id=order_id, total=total)

    subscriptions()["loop.ping"].signal.connect(echo, weak=False)
    kit.start()

    kit.send("loop.ping", ORDER, schema_version="2.0")
    kit.finish(handled=4)  # hops 0, 1, 2 and 3 (MAX_HOPS): the answer to the last would be the 4th hop

    assert [c["hops"] for c in calls_then_again] == [0, 1, 2, 3]
    assert kit.verdicts() == {"acked": 3, "dead-lettered": 1}
    assert kit.dead_letters() == [("loop.ping", "hop-limit", 1)]
    assert kit.retries() == []


def test_ordered_delivery_per_key_with_a_retry_in_place(kit: Kit) -> None:
    revised = Signal()
    broadcaster.broadcast(revised, event="shop.revised", schema=Revised, key="sku")
    calls = Calls()
    broadcaster.subscribe("shop.revised", schema=Revised, ordered=True).connect(calls, weak=False)
    failing = {("a", 1)}

    def fail_once(sku: str, revision: int, **_: Any) -> None:
        if (sku, revision) in failing:
            failing.discard((sku, revision))
            raise ConnectionError("replica busy")

    subscriptions()["shop.revised"].signal.connect(fail_once, weak=False)
    kit.start()

    for revision in range(4):
        for sku in ("a", "b"):
            revised.send(None, sku=sku, revision=revision)
    kit.finish(handled=8)

    by_key: dict[str, list[tuple[int, int]]] = {}
    for call in calls:
        by_key.setdefault(call["sku"], []).append((call["revision"], call["attempt"]))
    assert by_key["a"] == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]  # retried in place: nothing overtook it
    assert by_key["b"] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert kit.retries() == []  # no copy through a delay queue
    assert kit.verdicts() == {"acked": 8}


def test_ordered_exhaustion_dead_letters_and_the_partition_goes_on(kit: Kit) -> None:
    revised = Signal()
    broadcaster.broadcast(revised, event="shop.revised", schema=Revised, key="sku")
    calls = Calls()
    broadcaster.subscribe("shop.revised", schema=Revised, ordered=True).connect(calls, weak=False)

    def fail_revision_one(revision: int, **_: Any) -> None:
        if revision == 1:
            raise ConnectionError("replica busy")

    subscriptions()["shop.revised"].signal.connect(fail_revision_one, weak=False)
    kit.start()

    for revision in range(3):
        revised.send(None, sku="a", revision=revision)
    kit.finish(handled=3)

    assert [(c["revision"], c["attempt"]) for c in calls] == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1)]
    assert kit.verdicts() == {"acked": 2, "dead-lettered": 1}
    assert kit.dead_letters() == [("shop.revised", "receiver-error", 3)]


@pytest.mark.django_db(transaction=True)
def test_the_stale_event_guard_skips_an_older_version(kit: Kit) -> None:
    calls = Calls()
    broadcaster.subscribe("shop.revised", schema=Revised, ordered=True, version_field="revision").connect(
        calls, weak=False
    )
    kit.start()

    key = f"sku-{uuid.uuid4().hex[:8]}"
    for revision in (2, 1, 3):
        kit.send("shop.revised", {"sku": key, "revision": revision}, partition_key=key)
    kit.finish(handled=3)

    assert [c["revision"] for c in calls] == [2, 3]
    assert kit.verdicts() == {"acked": 3}  # the stale one is acknowledged without its receivers


PATTERNS = ["#", "*", "a", "a.*", "a.#", "*.b", "#.b", "a.*.c", "a.#.c", "#.#", "*.*", "a.b.#", "#.a.#", "*.#", ""]
KEYS = ["", "a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.y.c", "a.c.c", "x.a.y", "a..c", "a.b.c.d"]


def test_topic_patterns_route_as_rabbitmq_routes_them(broker: Broker) -> None:
    """`topic_matches` against the broker itself: a queue per pattern, every key published once."""
    channel = broker.connection.channel()
    channel.exchange_declare(broker.exchange, "topic", durable=True)
    queues = {}
    for index, pattern in enumerate(PATTERNS):
        queues[pattern] = f"{broker.exchange}.pattern.{index}"
        channel.queue_declare(queues[pattern], durable=True)
        broker.queues.append(queues[pattern])
        channel.queue_bind(queues[pattern], broker.exchange, pattern)
    for key in KEYS:
        broker.publish(key, key.encode(), pika.BasicProperties())

    routed = {pattern: {m.body.decode() for m in broker.drain(queue)} for pattern, queue in queues.items()}
    assert routed == {pattern: {key for key in KEYS if topic_matches(pattern, key)} for pattern in PATTERNS}

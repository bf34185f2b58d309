"""Partition keys, ordered subscriptions and the stale-event guard, without a broker."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.dispatch import Signal
from pydantic import BaseModel

import broadcaster
from broadcaster.dispatch import Action, dispatch
from broadcaster.envelope import Envelope, decode, properties_for
from broadcaster.exceptions import InvalidPayload, RegistrationError
from broadcaster.models import AppliedVersion
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.testing import capture_broadcasts
from broadcaster.topology import Partitions
from tests.test_topology import Recorder


class OrderSaved(BaseModel):
    order_id: int
    revision: int
    status: str = "new"


class Snapshot(BaseModel):
    id: int
    revision: int


class Replicated(BaseModel):
    instance: Snapshot
    created: bool


class Stamped(BaseModel):
    sku: str
    updated_at: datetime.datetime


def test_the_key_field_travels_as_ce_partitionkey() -> None:
    saved = Signal()
    broadcaster.broadcast(saved, event="orders.order_saved", schema=OrderSaved, key="order_id")
    with capture_broadcasts() as captured:
        saved.send(sender=None, order_id=42, revision=1)
    [message] = captured
    assert message.envelope.partition_key == "42"
    headers = message.envelope.headers()
    assert headers["ce-partitionkey"] == "42"
    assert decode(properties_for(message.envelope), message.body).envelope.partition_key == "42"


def test_a_key_function_sees_the_validated_payload() -> None:
    saved = Signal()
    broadcaster.broadcast(saved, event="orders.order_saved", schema=OrderSaved, key=lambda p: f"order-{p.order_id}")
    with capture_broadcasts() as captured:
        saved.send(sender=None, order_id="7", revision=1)
    assert captured[0].envelope.partition_key == "order-7"


@pytest.mark.parametrize("value", [None, 1.5, True, "", "x" * 300, b"bytes"])
def test_a_key_that_cannot_name_an_entity_fails_the_caller(value: object) -> None:
    saved = Signal()
    broadcaster.broadcast(saved, event="orders.order_saved", schema=OrderSaved, key=lambda p: value)
    with capture_broadcasts(), pytest.raises(InvalidPayload, match="partition key"):
        saved.send(sender=None, order_id=1, revision=1)


def test_a_key_must_name_a_field_of_the_schema() -> None:
    with pytest.raises(RegistrationError, match="key must name a field of OrderSaved"):
        broadcaster.broadcast(Signal(), event="orders.order_saved", schema=OrderSaved, key="orderid")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"version_field": "revision"}, "version_field needs ordered=True"),
        ({"ordered": True, "version_field": "status"}, "must be an int, date or datetime"),
        ({"ordered": True, "version_field": "nope"}, "must be an int, date or datetime"),
        ({"ordered": True, "fanout": "instance"}, "ordered=True needs fanout='service'"),
    ],
)
def test_ordered_options_are_checked_at_subscribe_time(options: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        broadcaster.subscribe("orders.order_saved", schema=OrderSaved, **options)


def test_partition_topology(settings: Any) -> None:
    settings.BROADCASTER = {**settings.BROADCASTER, "PARTITIONS": 3, "QUEUE_TYPE": "quorum"}
    partitions = Partitions.for_settings(get_settings())
    channel = Recorder()
    partitions.declare(channel, ["orders.order_saved", "orders.order_deleted"])
    assert channel.exchanges["tests.partitions"] == {
        "exchange_type": "x-consistent-hash",
        "durable": True,
        "arguments": {"hash-header": "ce-partitionkey"},
    }
    assert channel.exchange_bindings == [
        ("tests.partitions", "signals", "orders.order_deleted"),
        ("tests.partitions", "signals", "orders.order_saved"),
    ]
    assert sorted(channel.queues) == ["tests.partition.0", "tests.partition.1", "tests.partition.2"]
    arguments = channel.queues["tests.partition.0"]
    assert arguments["x-single-active-consumer"] is True
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-dead-letter-routing-key"] == "tests.dead-letter"  # the service's, through its requeue
    assert ("tests.partition.2", "tests.partitions", "1") in channel.bindings
    assert all(queue.in_place_retries and not queue.retry_queues for queue in partitions.queues)


def _deliver(event: str, body: bytes, key: str | None, attempt: int = 1) -> Action:
    envelope = Envelope.new(source="orders", type=event, schema_version="1.0", partition_key=key)
    return dispatch(properties_for(envelope), body, settings=get_settings(), subscriptions=subscriptions()).action


@pytest.mark.django_db(transaction=True)
def test_the_stale_guard_skips_an_older_version_of_a_key() -> None:
    applied: list[tuple[int, int]] = []
    local = broadcaster.subscribe("orders.order_saved", schema=OrderSaved, ordered=True, version_field="revision")
    local.connect(lambda order_id, revision, **_: applied.append((order_id, revision)), weak=False)
    saved = b'{"order_id": 1, "revision": %d}'
    assert _deliver("orders.order_saved", saved % 2, "1") is Action.ACK
    assert _deliver("orders.order_saved", saved % 1, "1") is Action.ACK  # a replay of an older state
    assert _deliver("orders.order_saved", saved % 2, "1") is Action.ACK  # the same version again
    assert _deliver("orders.order_saved", saved % 3, "1") is Action.ACK
    assert _deliver("orders.order_saved", saved % 1, "2") is Action.ACK  # another key has its own
    assert applied == [(1, 2), (1, 3), (1, 1)]
    assert {(row.partition_key, row.version) for row in AppliedVersion.objects.all()} == {
        ("1", f"i{3 + 2**63:020d}"),
        ("2", f"i{1 + 2**63:020d}"),
    }


@pytest.mark.django_db(transaction=True)
def test_key_and_version_may_be_dotted_paths_into_a_model_snapshot() -> None:
    saved = Signal()
    broadcaster.broadcast(saved, event="shop.replicated", schema=Replicated, key="instance.id")
    with capture_broadcasts() as captured:
        saved.send(sender=None, instance={"id": 9, "revision": 4}, created=False)
    assert captured[0].envelope.partition_key == "9"
    applied: list[int] = []
    local = broadcaster.subscribe("shop.replicated", schema=Replicated, ordered=True, version_field="instance.revision")
    local.connect(lambda instance, **_: applied.append(instance.revision), weak=False)
    for revision in (4, 3, 5):
        body = b'{"instance": {"id": 9, "revision": %d}, "created": false}' % revision
        assert _deliver("shop.replicated", body, "9") is Action.ACK
    assert applied == [4, 5]
    with pytest.raises(RegistrationError, match="must be an int, date or datetime"):
        broadcaster.subscribe("shop.other", schema=Replicated, ordered=True, version_field="instance.nope")


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_fails_leaves_the_version_unrecorded() -> None:
    local = broadcaster.subscribe("shop.stamped", schema=Stamped, ordered=True, version_field="updated_at")
    failures = [RuntimeError("down")]

    def receiver(**_: Any) -> None:
        if failures:
            raise failures.pop()

    local.connect(receiver, weak=False)
    body = b'{"sku": "a", "updated_at": "2026-01-01T10:00:00+01:00"}'
    assert _deliver("shop.stamped", body, "a") is Action.RETRY
    assert not AppliedVersion.objects.exists()
    assert _deliver("shop.stamped", body, "a") is Action.ACK
    assert AppliedVersion.objects.get().version == "t2026-01-01T09:00:00.000000"
    older = b'{"sku": "a", "updated_at": "2026-01-01T09:30:00Z"}'
    assert _deliver("shop.stamped", older, "a") is Action.ACK
    assert AppliedVersion.objects.get().version == "t2026-01-01T09:30:00.000000"  # 09:30 UTC is newer

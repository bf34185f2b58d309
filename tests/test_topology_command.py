"""broadcaster_topology --apply, --check and --prune against the real broker and its management API."""

from __future__ import annotations

import io
from typing import Any

import pika
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pydantic import BaseModel

import broadcaster
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings
from broadcaster.topology import Partitions, Topology, plan
from tests.conftest import Broker


class Thing(BaseModel):
    id: int


def topology_command(*args: str) -> tuple[int, str]:
    """Run the command; (exit code, what it printed)."""
    out = io.StringIO()
    try:
        call_command("broadcaster_topology", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def routed(broker: Broker, routing_key: str) -> bool:
    """Whether a mandatory publish with `routing_key` reaches any queue."""
    channel = broker.connection.channel()
    channel.confirm_delivery()
    try:
        channel.basic_publish(broker.exchange, routing_key, b"{}", pika.BasicProperties(), mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def test_apply_declares_the_topology_a_daemon_would_and_check_then_passes(broker: Broker) -> None:
    broadcaster.subscribe("ops.created", schema=Thing)
    broadcaster.subscribe("ops.deleted", schema=Thing)
    code, out = topology_command("--check")
    assert code == 1
    assert f"missing  queue {broker.exchange}" in out
    assert f"missing  binding: {broker.exchange} -> queue {broker.exchange} with 'ops.created'" in out

    assert topology_command("--apply")[0] == 0
    assert topology_command("--apply")[0] == 0  # idempotent, like migrate
    assert routed(broker, "ops.created")  # no daemon has run: the release step alone routes events
    assert not routed(broker, "ops.unknown")
    code, out = topology_command("--check")
    assert (code, out.strip()) == (0, "the broker matches the code")


def test_check_lists_extra_missing_and_changed(broker: Broker, settings: Any) -> None:
    broadcaster.subscribe("ops.created", schema=Thing)
    broadcaster.subscribe("ops.deleted", schema=Thing)
    topology_command("--apply")
    channel = broker.connection.channel()
    channel.queue_bind(broker.exchange, broker.exchange, "ops.removed")  # a subscription the code dropped
    channel.queue_unbind(broker.exchange, broker.exchange, "ops.deleted")
    settings.BROADCASTER = {**settings.BROADCASTER, "QUEUE_TYPE": "quorum"}
    code, out = topology_command("--check")
    assert code == 1
    lines = out.splitlines()
    assert f"extra    binding: {broker.exchange} -> queue {broker.exchange} with 'ops.removed'" in lines
    assert f"missing  binding: {broker.exchange} -> queue {broker.exchange} with 'ops.deleted'" in lines
    assert any(
        line.startswith(f"changed  queue {broker.exchange}: arguments") and "x-queue-type='classic'" in line
        for line in lines
    ), out
    assert lines[-1].startswith("4 difference(s)")  # the dead-letter queue changed type too


def test_prune_removes_extra_bindings_only_once_confirmed(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broadcaster.subscribe("ops.created", schema=Thing)
    topology_command("--apply")
    channel = broker.connection.channel()
    channel.queue_bind(broker.exchange, broker.exchange, "ops.removed")
    channel.queue_bind(f"{broker.exchange}.dead-letter", broker.exchange, "ops.stray")

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    with pytest.raises(CommandError, match="pass --yes"):  # not a terminal: never pruned unasked
        topology_command("--prune")
    assert routed(broker, "ops.removed")

    code, out = topology_command("--prune", "--yes")
    assert code == 0
    assert "2 binding(s) the code no longer has:" in out
    assert out.strip().endswith("removed 2 binding(s)")
    assert not routed(broker, "ops.removed")
    assert not routed(broker, "ops.stray")
    assert routed(broker, "ops.created")
    assert topology_command("--check")[0] == 0
    assert topology_command("--prune")[1].strip() == "no binding to prune"


def test_ordered_subscriptions_get_their_partitions_and_leave_the_service_queue(broker: Broker) -> None:
    broadcaster.subscribe("ops.created", schema=Thing, ordered=True)
    settings = get_settings()
    partitions = Partitions.for_settings(settings)
    try:
        topology_command("--apply")
        expected = plan(settings, subscriptions())
        assert partitions.exchange in expected.exchanges
        assert {q.queue for q in partitions.queues} <= set(expected.queues)
        code, out = topology_command("--check")
        assert (code, out.strip()) == (0, "the broker matches the code")
        # A binding the daemon of an earlier version left on the service queue is an extra one.
        broker.connection.channel().queue_bind(broker.exchange, broker.exchange, "ops.created")
        code, out = topology_command("--check")
        assert code == 1
        assert f"extra    binding: {broker.exchange} -> queue {broker.exchange} with 'ops.created'" in out
    finally:
        channel = broker.connection.channel()
        for queue in partitions.queues:
            channel.queue_delete(queue.queue)
        channel.exchange_delete(partitions.exchange)


def test_management_errors_name_the_setting_and_never_the_password(broker: Broker, settings: Any) -> None:
    broadcaster.subscribe("ops.created", schema=Thing)
    password = "wrong-s3cret-pw"
    settings.BROADCASTER = {**settings.BROADCASTER, "MANAGEMENT_URL": f"http://guest:{password}@127.0.0.1:15672"}
    with pytest.raises(CommandError) as refused:
        topology_command("--check")
    assert "MANAGEMENT_URL" in str(refused.value)
    assert password not in str(refused.value)
    assert refused.value.returncode == 3

    settings.BROADCASTER = {**settings.BROADCASTER, "MANAGEMENT_URL": f"http://guest:{password}@127.0.0.1:1"}
    with pytest.raises(CommandError) as unreachable:
        topology_command("--check")
    assert "rabbitmq_management" in str(unreachable.value)
    assert password not in str(unreachable.value)


def test_management_url_defaults_to_the_first_broker_host(settings: Any) -> None:
    settings.BROADCASTER = {
        **settings.BROADCASTER,
        "BROKER_URL": "amqp://svc:p%40ss@rabbit-1:5672/prod;amqp://svc:p%40ss@rabbit-2:5672/prod",
    }
    assert get_settings().management == ("http://rabbit-1:15672", "svc", "p@ss")
    assert "p@ss" not in repr(get_settings())


def test_the_plan_is_recorded_from_the_declarations_themselves(settings: Any) -> None:
    broadcaster.subscribe("ops.created", schema=Thing)
    recorded = plan(get_settings(), subscriptions())
    topology = Topology.for_settings(get_settings())
    assert set(recorded.queues) == {topology.queue, topology.dead_letter_queue, *topology.retry_queues}
    assert recorded.exchanges[topology.exchange] == ("topic", {})


def test_a_producer_only_service_gets_its_exchange_and_no_queue(broker: Broker) -> None:
    assert topology_command("--apply")[0] == 0
    channel = broker.connection.channel()
    channel.exchange_declare(broker.exchange, "topic", passive=True, durable=True)  # raises if missing
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # no service queue: it subscribes to nothing
        broker.connection.channel().queue_declare(broker.exchange, passive=True)
    code, out = topology_command("--check")
    assert (code, out.strip()) == (0, "the broker matches the code")

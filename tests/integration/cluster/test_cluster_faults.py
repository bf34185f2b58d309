"""Node faults on a three-node cluster with quorum queues: nothing sent is lost.

Each test publishes numbered bursts through the library (``fire``, or the outbox relay)
while a daemon consumes, does something to a node, and classifies what the receivers
saw (see tests/integration/test_faults.py): lost and unexpected must be zero, duplicates
are at-least-once and reported. The clients are never restarted: they move to another
node by themselves, and each test checks from their logs that they did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.cluster.conftest import Cluster, connected_nodes, serving
from tests.integration.conftest import Broker, Daemon, Service, wait_for
from tests.integration.test_faults import burst, check, classify, postgres, settle, unpublished, wait_started

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]
__all__ = ["postgres"]  # a fixture these tests use

COUNT = 1000  # events per burst
PACE = 0.003  # seconds between sends: a burst lasts several seconds, faults land inside it
KILL_AFTER = 200  # events received before the fault


def on_node(process: Daemon, role: str, node: int) -> None:
    """Wait until `process`'s client of `role` says it connected to `node` last."""
    wait_for(lambda: connected_nodes(process.log(), role)[-1:] == [node], 30, f"the {role} on node {node}")


def received_at_least(service: Service, count: int, timeout: float = 60) -> None:
    wait_for(lambda: len(service.records()) >= count, timeout, f"{count} events received")


def deliver(rabbit: Broker, service: Service, sent: range, producer: Daemon) -> list[tuple[Any, str]]:
    producer.wait_exit(timeout=120)  # its flush succeeded: the broker confirmed every send()
    return settle(rabbit, service, sent, timeout=120)


def test_each_node_killed_under_the_publisher_and_the_daemon(
    nodes: Cluster, rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", **nodes.env())
    daemon = shipping.daemon()
    pid = daemon.proc.pid
    seen: list[tuple[Any, str]] = []
    for victim in (1, 2, 3):
        # The daemon moved to the node after each victim; this burst's publisher lists the
        # nodes from the victim on, so both clients are on the node that dies.
        on_node(daemon, "consumer", victim)
        sent = range((victim - 1) * COUNT, victim * COUNT)
        orders = service(f"orders{victim}", "producer", **nodes.env(victim))
        producer = orders.spawn(*burst(COUNT, pace=PACE, start=sent.start))
        on_node(producer, "publisher", victim)
        received_at_least(shipping, sent.start + KILL_AFTER)
        assert producer.alive, "the burst ended before the node died: nothing was tested"
        nodes.kill(victim)

        seen = deliver(rabbit, shipping, sent, producer)  # the node stays down meanwhile
        round_tally = classify(sent, [(n, i) for n, i in seen if n in sent])
        check(round_tally, f"cluster: node {victim} SIGKILLed under publisher and daemon", summarize)
        assert connected_nodes(producer.log(), "publisher")[1:], "the publisher never moved to another node"
        nodes.start(victim)

    check(classify(range(3 * COUNT), seen), "cluster: each node SIGKILLed in turn (total)", summarize)
    assert daemon.alive
    assert daemon.proc.pid == pid, "the daemon was restarted"
    assert connected_nodes(daemon.log(), "consumer") == [1, 2, 3, 1]


def test_rolling_restart_under_load(
    nodes: Cluster, rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", **nodes.env())
    orders = service("orders", "producer", **nodes.env())
    daemon = shipping.daemon()
    seen: list[tuple[Any, str]] = []
    for node in (1, 2, 3):
        sent = range((node - 1) * COUNT, node * COUNT)
        producer = orders.spawn(*burst(COUNT, pace=PACE, start=sent.start))
        received_at_least(shipping, sent.start + KILL_AFTER)
        assert producer.alive, "the burst ended before the restart: nothing was tested"
        nodes.stop(node)
        nodes.start(node)  # the next node only once this one is back, as an operator does
        seen = deliver(rabbit, shipping, sent, producer)

    check(classify(range(3 * COUNT), seen), "cluster: rolling restart of the three nodes", summarize)
    assert daemon.alive
    assert len(connected_nodes(daemon.log(), "consumer")) >= 4, "the daemon did not follow the restarts"


def test_partitioned_node_pauses_and_its_clients_move(
    nodes: Cluster, rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", **nodes.env())
    orders = service("orders", "producer", **nodes.env())
    daemon = shipping.daemon()
    producer = orders.spawn(*burst(2 * COUNT, pace=PACE))
    on_node(producer, "publisher", 1)
    on_node(daemon, "consumer", 1)
    received_at_least(shipping, KILL_AFTER)
    assert producer.alive, "the burst ended before the partition: nothing was tested"

    nodes.partition(1)
    wait_for(lambda: not serving(1), 60, "node 1 to pause (pause_minority)")
    tally = classify(range(2 * COUNT), deliver(rabbit, shipping, range(2 * COUNT), producer))
    check(tally, "cluster: node 1 partitioned and paused", summarize)
    assert connected_nodes(producer.log(), "publisher")[-1] != 1, "the publisher stayed on the paused node"
    assert connected_nodes(daemon.log(), "consumer")[-1] != 1, "the daemon stayed on the paused node"
    assert not serving(1), "node 1 came back by itself while cut off: it was never partitioned"

    nodes.heal(1)
    wait_for(lambda: serving(1), 120, "node 1 to resume once it sees the others")
    assert daemon.alive


def test_outbox_relay_through_a_node_kill(
    nodes: Cluster,
    rabbit: Broker,
    postgres: dict[str, str],
    service: Callable[..., Service],
    summarize: Callable[[str], None],
) -> None:
    shipping = service("shipping", "consumer", **nodes.env())
    settings = {"PUBLISH_MODE": "outbox", "OUTBOX_POLL_INTERVAL": "0.2", "PUBLISH_TIMEOUT": "2"}
    orders = service("orders", "producer", **settings, **postgres, **nodes.env())
    orders.manage("migrate", "--verbosity", "0")
    daemon = shipping.daemon()
    relay = orders.spawn("relay_outbox")
    wait_started(relay, "relay_outbox: started")
    producer = orders.spawn(*burst(2 * COUNT, pace=PACE))
    received_at_least(shipping, KILL_AFTER)
    on_node(relay, "relay", 1)  # the relay names its publisher "relay"
    assert producer.alive, "the burst ended before the node died: nothing was tested"

    started = time.monotonic()
    nodes.kill(1)
    tally = classify(range(2 * COUNT), deliver(rabbit, shipping, range(2 * COUNT), producer))
    check(tally, "cluster: outbox relay through a node kill", summarize)
    summarize(f"cluster: outbox relay, every event delivered {time.monotonic() - started:.1f} s after the kill")
    wait_for(lambda: unpublished(orders) == 0, 30, "the outbox rows to be stamped published")
    assert relay.alive
    assert daemon.alive
    assert connected_nodes(relay.log(), "relay")[-1] != 1


def test_a_daemon_whose_instance_queue_died_with_its_node_moves_to_a_new_one(
    nodes: Cluster, rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    # An instance queue is classic: it lives on the node the daemon first declared it on,
    # and while that node is down the broker refuses to declare it anywhere else. The
    # daemon must not wait for that node, consuming nothing of its service queue meanwhile.
    shipping = service("shipping", "instance", INSTANCE_ID="pod-a", **nodes.env())
    daemon = shipping.daemon()
    on_node(daemon, "consumer", 1)  # its instance queue is on node 1
    nodes.kill(1)

    orders = service("orders", "producer", **nodes.env(2))
    pings = orders.spawn(*burst(COUNT // 5))
    priced = orders.spawn("fire", "priced", "--data", '{"sku": "a-1", "amount": "1.50"}', "--count", "50")
    seen = deliver(rabbit, shipping, range(COUNT // 5), pings)
    priced.wait_exit(timeout=120)
    pinged = [(n, i) for n, i in seen if not isinstance(n, tuple)]  # instance events are (type, id)
    check(classify(range(COUNT // 5), pinged), "cluster: instance queue's node killed (service events)", summarize)
    wait_for(lambda: sum(r["type"] == "relay.priced" for r in shipping.records()) >= 50, 60, "50 instance events")
    summarize("cluster: instance queue's node killed: the daemon moved to a new instance queue, 50 of 50 received")

    assert f"moves to instance queue {shipping.queue}.instance.pod-a.moved-1" in daemon.log()
    assert connected_nodes(daemon.log(), "consumer")[-1] in (2, 3)
    assert daemon.alive

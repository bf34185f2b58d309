"""The three-node cluster of scripts/cluster.sh, and the test's own connection to it.

The ``cluster`` tests run only when selected (``pytest -m cluster``, ``make cluster``):
they start three RabbitMQ nodes, which takes half a minute or more. The session starts
the cluster unless it runs already, and stops it at the end if it started it. They touch
the cluster's nodes only, never the main broker, so they need only the shared lock.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.exceptions
import pytest

from broadcaster import pikacompat
from tests.integration.conftest import Broker, _release
from tests.integration.tls_broker import unavailable_reason

SCRIPT = Path(__file__).parents[3] / "scripts" / "cluster.sh"
PORTS = {1: 5681, 2: 5682, 3: 5683}
URLS = [f"amqp://guest:guest@127.0.0.1:{port}/%2F" for port in PORTS.values()]
_CONNECTED = re.compile(r"(publisher|consumer|relay) connected to amqp://\S+:(\d+)/")
# Node 1 of the cluster's cookie is set to this for its peers to cut it off from them.
PARTITION_COOKIE = "broadcaster_partition_test"


def cluster_sh(*args: str, timeout: float = 240) -> str:
    """Run scripts/cluster.sh with `args`; fail the test if it fails."""
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"cluster.sh {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def node_eval(node: int, expression: str) -> str:
    """Evaluate an Erlang expression on node `node` (its VM answers even while RabbitMQ is paused)."""
    result = subprocess.run(
        ["rabbitmqctl", "-q", "-n", f"bcast{node}@localhost", "eval", expression],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"eval on node {node} failed: {result.stderr}"
    return result.stdout


def serving(node: int) -> bool:
    """Whether node `node` accepts AMQP connections (a paused node does not)."""
    try:
        # A pausing node may reset the socket as it opens (see pikacompat.blocking_connection).
        pikacompat.blocking_connection(pika.URLParameters(URLS[node - 1] + "?connection_attempts=1")).close()
    except pika.exceptions.AMQPConnectionError:
        return False
    return True


def connected_nodes(log: str, role: str) -> list[int]:
    """The nodes a client of `role` ("publisher", "consumer", "relay") connected to, in order, from its log."""
    by_port = {port: node for node, port in PORTS.items()}
    return [by_port[int(port)] for who, port in _CONNECTED.findall(log) if who == role]


@dataclass
class Cluster:
    """The running cluster: its BROKER_URL and what tests do to its nodes."""

    urls: list[str]

    def env(self, *first: int) -> dict[str, str]:
        """Service settings for the cluster: quorum queues, the nodes listed from node `first` on."""
        start = first[0] - 1 if first else 0
        ordered = self.urls[start:] + self.urls[:start]
        return {
            "BROADCASTER_BROKER_URL": ";".join(ordered),
            "QUEUE_TYPE": "quorum",
            "RECONNECT_MAX_DELAY": "1",
            "LOG_CONNECTIONS": "1",
        }

    def kill(self, node: int) -> None:
        cluster_sh("kill-node", str(node))

    def stop(self, node: int) -> None:
        cluster_sh("stop-node", str(node))

    def start(self, node: int) -> None:
        cluster_sh("start-node", str(node))

    def partition(self, node: int) -> None:
        """Cut `node` off from the other two: another cookie for them, and the links dropped."""
        peers = ",".join(f"'bcast{other}@localhost'" for other in PORTS if other != node)
        node_eval(
            node,
            f"[begin erlang:set_cookie(P, {PARTITION_COOKIE}), erlang:disconnect_node(P) end || P <- [{peers}]], ok.",
        )

    def heal(self, node: int) -> None:
        """Give `node` the machine's cookie for its peers again and reconnect them."""
        peers = ",".join(f"'bcast{other}@localhost'" for other in PORTS if other != node)
        restore = "begin erlang:set_cookie(P, erlang:get_cookie()), net_adm:ping(P) end"
        node_eval(node, f"[{restore} || P <- [{peers}]], ok.")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Half a minute of cluster start-up belongs only to runs that ask for it.
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="starts a three-node cluster: run with -m cluster (make cluster)")
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The three nodes, running and joined; started (and stopped afterwards) unless they run already."""
    if reason := unavailable_reason():
        pytest.skip(f"cannot start a cluster here: {reason}")
    running = subprocess.run([str(SCRIPT), "status"], capture_output=True, timeout=60, check=False).returncode == 0
    if not running:
        started = time.monotonic()
        cluster_sh("start")
        print(f"cluster started in {time.monotonic() - started:.0f} s")
    yield Cluster(URLS)
    if not running:
        cluster_sh("stop")


@pytest.fixture
def nodes(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with every node healed and running again after the test, whatever it did."""
    yield cluster
    for node in PORTS:
        with contextlib.suppress(AssertionError):  # the node is down: start brings it back
            cluster.heal(node)
    cluster_sh("start")


class ClusterBroker(Broker):
    """The test's own connection, to whichever node of the cluster answers."""

    def reconnect(self) -> None:
        if (old := getattr(self, "connection", None)) is not None:
            with contextlib.suppress(ValueError):  # pika closed the I/O loop of a connection whose node died
                _release(old)
        params = [pika.URLParameters(url + "?connection_attempts=1") for url in URLS]
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)

    def close(self) -> None:
        self.reconnect()  # the node under the old connection may have died since
        super().close()

    def count(self, queue: str) -> int:
        # The node under this connection may be the one a test just killed.
        for _ in range(5):
            try:
                return super().count(queue)
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.5)
                self.reconnect()
        return super().count(queue)


@pytest.fixture
def rabbit(prefix: str, nodes: Cluster) -> Iterator[Broker]:
    """The test's own connection to the cluster; deletes what the test made there."""
    broker = ClusterBroker(prefix)
    yield broker
    broker.close()

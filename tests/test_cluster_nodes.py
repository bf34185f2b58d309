"""BROKER_URL listing the nodes of a cluster: validation, checks, failover order, real failover."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pika.exceptions
import pytest

from broadcaster import connection
from broadcaster.checks import check_settings
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.publisher import Publisher
from broadcaster.settings import BroadcasterSettings, get_settings
from tests.conftest import BROKER_URL, Broker

NODE = "amqp://svc:s3cret@rabbit-{}.internal:5672/prod"
NODES = [NODE.format(n) for n in (1, 2, 3)]


def settings_with(**values: Any) -> BroadcasterSettings:
    return BroadcasterSettings.model_validate({"SERVICE_NAME": "orders", **values})


def problems(settings: Any, broker_url: Any, **more: Any) -> list[tuple[str | None, str]]:
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "BROKER_URL": broker_url, **more}
    return [(message.id, message.msg) for message in check_settings()]


def closed_port() -> int:
    """A loopback port nothing listens on (a node that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("value", [NODES, tuple(NODES), ";".join(NODES), " ; ".join(NODES) + ";"])
def test_a_list_or_a_semicolon_string_names_the_nodes_in_order(value: Any) -> None:
    assert settings_with(BROKER_URL=value).broker_urls == tuple(NODES)


def test_the_environment_variable_takes_several_nodes(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCASTER_BROKER_URL", ";".join(NODES))
    settings.BROADCASTER = {"SERVICE_NAME": "orders", "QUEUE_TYPE": "quorum"}
    assert get_settings().broker_urls == tuple(NODES)
    assert get_settings().broker_user == "svc"
    assert check_settings() == []


def test_a_bad_entry_is_named_without_its_password(settings: Any) -> None:
    [(check_id, text)] = problems(settings, [NODES[0], "http://svc:s3cret@other:80/"])
    assert check_id == "broadcaster.E003"
    assert "entry 2" in text
    assert "s3cret" not in text


def test_mixed_schemes_are_an_error_naming_the_entry(settings: Any) -> None:
    amqps = "amqps://svc:s3cret@rabbit-3.internal:5671/prod"
    [(check_id, text)] = problems(settings, [*NODES[:2], amqps])
    assert check_id == "broadcaster.E020"
    assert "entry 3 (amqps://svc:***@rabbit-3.internal:5671/prod)" in text
    assert "s3cret" not in text


@pytest.mark.parametrize(
    "odd",
    [
        "amqp://other:s3cret@rabbit-2.internal:5672/prod",  # another user
        "amqp://svc:0ther@rabbit-2.internal:5672/prod",  # another password
        "amqp://svc:s3cret@rabbit-2.internal:5672/test",  # another vhost
        "amqp://rabbit-2.internal:5672/prod",  # pika's guest:guest
    ],
)
def test_other_credentials_are_an_error_naming_the_entry(settings: Any, odd: str) -> None:
    [(check_id, text)] = problems(settings, [NODES[0], odd])
    assert check_id == "broadcaster.E021"
    assert "entry 2 (" in text
    assert "s3cret" not in text
    assert "0ther" not in text


def test_classic_queues_on_several_nodes_warn(settings: Any) -> None:
    assert [check_id for check_id, _ in problems(settings, NODES)] == ["broadcaster.W020"]
    assert problems(settings, NODES, QUEUE_TYPE="quorum") == []
    assert problems(settings, NODES[0]) == []  # one node: nothing to fail over to


def test_failover_order_starts_after_the_node_that_failed() -> None:
    nodes = connection.Nodes(settings_with(BROKER_URL=NODES, RECONNECT_MAX_DELAY=4), "publisher")
    assert [nodes.next().index for _ in range(4)] == [0, 1, 2, 0]
    nodes.connected(nodes.all[1])
    assert nodes.next().index == 2  # node 2 failed: node 3 next
    assert [nodes.failed() for _ in range(2)] == [0.0, 0.0]  # nodes left to try at once
    delay = nodes.failed()  # every node failed in turn: back off
    assert 0 < delay <= 4
    assert [nodes.failed() for _ in range(2)] == [0.0, 0.0]
    assert 0 < nodes.failed() <= 4


def test_one_node_backs_off_after_every_failure() -> None:
    nodes = connection.Nodes(settings_with(BROKER_URL=NODES[0]), "consumer")
    assert all(nodes.failed() > 0 for _ in range(3))
    assert nodes.next() is nodes.next()


def test_labels_are_redacted_and_tls_names_each_node() -> None:
    urls = [url.replace("amqp://", "amqps://").replace(":5672", ":5671") for url in NODES]
    nodes = connection.Nodes(settings_with(BROKER_URL=urls), "consumer")
    assert [node.label for node in nodes.all] == [f"amqps://svc:***@rabbit-{n}.internal:5671/prod" for n in (1, 2, 3)]
    assert [node.params.ssl_options.server_hostname for node in nodes.all] == [
        f"rabbit-{n}.internal" for n in (1, 2, 3)
    ]


def test_a_blocking_client_skips_a_dead_node(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    nodes = connection.Nodes(settings_with(BROKER_URL=[dead, BROKER_URL]), "dead-letters")
    caplog.set_level(logging.INFO, "broadcaster.connection")
    conn = connection.connect_blocking(nodes)
    try:
        assert conn.is_open
        assert nodes.current is nodes.all[1]
    finally:
        conn.close()
    assert "dead-letters cannot connect to amqp://guest:***@127.0.0.1" in caplog.text
    assert "dead-letters connected to amqp://guest:***@127.0.0.1:5672/%2F" in caplog.text


def test_connect_blocking_raises_when_no_node_answers() -> None:
    urls = [f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F" for _ in range(2)]
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connection.connect_blocking(connection.Nodes(settings_with(BROKER_URL=urls), "dead-letters"))


def test_the_publisher_delivers_through_the_next_node_when_the_first_is_down(broker: Broker) -> None:
    queue = broker.tap()
    dead = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    config = settings_with(BROKER_URL=[dead, BROKER_URL], EXCHANGE=broker.exchange, RECONNECT_MAX_DELAY=1)
    publisher = Publisher(config)
    try:
        for n in range(20):
            publisher.publish(OutboundMessage(Envelope.new(source="orders", type="orders.ping"), b'{"n": %d}' % n))
        publisher.flush(10)
    finally:
        publisher.close(5)
    assert len(broker.drain(queue)) == 20


def test_the_daemon_starts_on_the_next_node_when_the_first_is_down(
    broker: Broker, daemon: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": [dead, BROKER_URL]}
    caplog.set_level(logging.INFO, "broadcaster")
    consumer = daemon()
    assert consumer._link.nodes.current is consumer._link.nodes.all[1]
    assert "trying the next node" in caplog.text
    assert "consumer connected to amqp://guest:***@127.0.0.1:5672/%2F" in caplog.text

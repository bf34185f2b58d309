"""amqps:// against a second RabbitMQ node that only speaks TLS and wants client certificates.

A verified connection carries an event from the library's Publisher to its Consumer; a
wrong CA, a wrong server name, a missing client certificate and plain amqp:// to the TLS
port are each refused at once, with an error that names what failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pydantic import BaseModel

import broadcaster
from broadcaster import connection
from broadcaster.consumer import Consumer
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.publisher import Publisher
from broadcaster.registry import subscriptions
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Topology
from tests.integration.tls_broker import Authority, TlsNode, unavailable_reason

pytestmark = pytest.mark.faults  # starts a broker node of its own (about 10 s)

EVENT = "tls.ping"
REFUSED_WITHIN = 10.0  # seconds: a refused handshake must not hang


class Ping(BaseModel):
    n: int


@pytest.fixture(scope="module")
def node() -> Iterator[TlsNode]:
    if reason := unavailable_reason():
        pytest.skip(f"cannot start a second RabbitMQ node: {reason}")
    started = TlsNode.start()
    try:
        yield started
    finally:
        started.stop()


def settings_for(node: TlsNode, *, scheme: str = "amqps", **overrides: Any) -> BroadcasterSettings:
    """Settings of a service on `node`, verified with the node's CA and a client certificate."""
    raw: dict[str, Any] = {
        "SERVICE_NAME": "tls-service",
        "BROKER_URL": f"{scheme}://guest:guest@127.0.0.1:{node.port}/%2F",
        "EXCHANGE": "tls-signals",
        "RETRY_DELAYS": [1],
        "HEARTBEAT": 0,
    }
    if scheme == "amqps":
        raw |= {
            "TLS_CA_FILE": str(node.ca.path),
            "TLS_CERT_FILE": str(node.client.cert),
            "TLS_KEY_FILE": str(node.client.key),
            "TLS_SERVER_NAME": "localhost",  # the URL says 127.0.0.1; the certificate also names localhost
        }
    raw |= overrides
    return BroadcasterSettings.model_validate({key: value for key, value in raw.items() if value is not None})


def refusal(settings: BroadcasterSettings) -> str:
    """The consumer's error when it cannot connect; it must come quickly and never show the password."""
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        Consumer(settings, {}).run()
    assert time.monotonic() - started < REFUSED_WITHIN
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the broker at {settings.redacted_broker_url}: ")
    assert "guest:***@127.0.0.1" in message
    assert "guest:guest@" not in message
    return message


def test_verified_amqps_carries_an_event_from_publisher_to_consumer(node: TlsNode) -> None:
    settings = settings_for(node)
    received: list[dict[str, Any]] = []
    local = broadcaster.subscribe(EVENT, schema=Ping)
    local.connect(lambda **kwargs: received.append(kwargs), weak=False)
    _declare(settings)

    publisher = Publisher(settings)
    envelope = Envelope.new(source=settings.service_name, type=EVENT)
    publisher.publish(OutboundMessage(envelope, b'{"n": 7}'))
    try:
        publisher.flush(10)  # confirmed by the broker over TLS
    finally:
        publisher.close(5)

    consumer = Consumer(settings, subscriptions(), max_messages=1)
    errors = _run_in_thread(consumer, timeout=15)
    assert errors == []
    [call] = received
    assert call["n"] == 7
    assert call["envelope"].id == envelope.id
    assert consumer.counts == {"acked": 1}


def test_a_broker_certificate_from_another_ca_is_refused(
    node: TlsNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = Authority(tmp_path, "another ca")
    settings = settings_for(node, TLS_CA_FILE=str(stranger.path))
    assert "certificate verify failed" in refusal(settings)

    # The publisher never blocks the caller: it keeps the event, says why in the log, and
    # flush() tells the caller that nothing was confirmed.
    caplog.set_level(logging.WARNING, logger="broadcaster.publisher")
    publisher = Publisher(settings)
    publisher.publish(OutboundMessage(Envelope.new(source="tls-service", type=EVENT), b'{"n": 1}'))
    with pytest.raises(FlushTimeout, match="1 message"):
        publisher.flush(3)
    with pytest.raises(FlushTimeout):
        publisher.close(0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "broadcaster.publisher"]
    assert any("publisher cannot connect to amqps://guest:***@127.0.0.1" in w for w in warnings), warnings
    assert any("certificate verify failed" in w for w in warnings), warnings


def test_a_certificate_for_another_name_is_refused(node: TlsNode) -> None:
    message = refusal(settings_for(node, TLS_SERVER_NAME="broker.example.org"))
    assert "certificate verify failed" in message
    assert "broker.example.org" in message  # "Hostname mismatch, certificate is not valid for ..."


def test_without_a_client_certificate_the_broker_refuses(node: TlsNode) -> None:
    message = refusal(settings_for(node, TLS_CERT_FILE=None, TLS_KEY_FILE=None))
    # TLS 1.3: the client may see the alert ("certificate required"), or only the stream
    # the broker closed (an EOF, or a reset when the close overtakes the alert).
    assert any(sign in message.lower() for sign in ("certificate", "ssleoferror", "connectionreseterror")), message


def test_plain_amqp_to_the_tls_port_fails_at_once(node: TlsNode) -> None:
    message = refusal(settings_for(node, scheme="amqp"))
    assert "IncompatibleProtocolError" in message or "Connection reset" in message


def test_tls_verify_false_accepts_any_certificate(node: TlsNode, tmp_path: Path) -> None:
    # Only for tests: with TLS_VERIFY off a certificate from an unknown CA is accepted.
    stranger = Authority(tmp_path, "another ca")
    settings = settings_for(node, TLS_CA_FILE=str(stranger.path), TLS_VERIFY=False)
    conn = pika.BlockingConnection(connection.parameters(settings, "test"))
    assert conn.is_open
    conn.close()


def _declare(settings: BroadcasterSettings) -> None:
    """Declare the service's queues over a verified connection, so the event has somewhere to go."""
    conn = pika.BlockingConnection(connection.parameters(settings, "test"))
    try:
        Topology.for_settings(settings).declare(conn.channel(), [EVENT])
    finally:
        conn.close()


def _run_in_thread(consumer: Consumer, timeout: float) -> list[BaseException]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="tls-consumer", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        consumer.stop()
        thread.join(5)
        pytest.fail(f"the consumer did not handle the event within {timeout:g} s")
    return errors

"""pika's private names and quirks: the fast path while the names are there, pika's public path
when they are not; a socket reset mid-connect is a failed connection attempt, never a crash."""

from __future__ import annotations

import errno
import importlib
import json
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.utils import io_services_utils

from broadcaster import pikacompat
from broadcaster.consumer import _Link
from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import BrokerUnavailable
from broadcaster.publisher import Publisher
from broadcaster.settings import get_settings
from tests.conftest import Broker


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    """Each test looks the names up again, and leaves them as pika has them."""
    yield
    assert pikacompat.recheck(), "the installed pika must have the names of the fast path"


def message(n: int) -> OutboundMessage:
    envelope = Envelope.new(source="tests", type="tests.numbered")
    return OutboundMessage(envelope, json.dumps({"n": n, "pad": "x" * 300}).encode())


def record_socket_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    writes: list[int] = []
    original = socket.socket.send

    def recording(sock: socket.socket, data: bytes, *args: Any) -> int:
        sent: int = original(sock, data, *args)
        writes.append(sent)
        return sent

    monkeypatch.setattr(socket.socket, "send", recording)
    return writes


def publish_through(broker: Broker, monkeypatch: pytest.MonkeyPatch, count: int) -> list[int]:
    """Publish `count` numbered messages with a new publisher; return the sizes of the socket writes."""
    tap = broker.tap()
    writes = record_socket_writes(monkeypatch)
    publisher = Publisher(get_settings())
    try:
        for n in range(count):
            publisher.publish(message(n))
        publisher.flush(20)
    finally:
        publisher.close(5)
    assert [json.loads(m.body)["n"] for m in broker.drain(tap)] == list(range(count))
    return writes


def test_the_installed_pika_takes_the_fast_path(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pikacompat.recheck()
    writes = publish_through(broker, monkeypatch, 1000)
    assert max(writes) > 100 * 300, "the frames of a batch were not joined"


def test_without_the_private_names_publishing_takes_pikas_public_path(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A pika release whose io_services_utils has no _AsyncPlaintextTransport: pika's own code
    # keeps using its class, the probe sees the module as that release would show it.
    real_import = importlib.import_module

    def renamed(name: str, package: str | None = None) -> Any:
        if name == "pika.adapters.utils.io_services_utils":
            return types.SimpleNamespace(_AsyncTransport2=io_services_utils._AsyncPlaintextTransport)  # type: ignore[attr-defined]
        return real_import(name, package)

    monkeypatch.setattr(pikacompat.importlib, "import_module", renamed)
    assert not pikacompat.recheck()
    monkeypatch.undo()  # the names are back, but the answer was given once for the process
    assert "lacks _AsyncPlaintextTransport" in caplog.text
    writes = publish_through(broker, monkeypatch, 1000)
    assert max(writes) < 100 * 300, "frames were joined without the fast path"


def test_a_private_attribute_gone_at_run_time_turns_the_fast_path_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert pikacompat.recheck()
    transport_class = io_services_utils._AsyncPlaintextTransport  # type: ignore[attr-defined]
    connection = object.__new__(pikacompat.BatchingConnection)
    connection._transport = object.__new__(transport_class)  # type: ignore[attr-defined]  # no _state, no _sock
    assert connection._send_now(b"frame") == 0  # the bytes go pika's way
    assert not pikacompat.fast_path()
    assert "changed at run time (AttributeError" in caplog.text


def test_import_works_whatever_pika_calls_its_internals() -> None:
    code = (
        "import pika.adapters.utils.io_services_utils as u;"
        "del u._AsyncPlaintextTransport;"
        "import django; from django.conf import settings; settings.configure(); django.setup();"
        "import broadcaster, broadcaster.publisher, broadcaster.pikacompat as c;"
        "print(c.fast_path())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def reset_as_they_connect(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """The next `times` new sockets lose their peer between the TCP handshake and pika's check of it.

    That is what a RabbitMQ node pausing (pause_minority) or stopping does to a client that
    reaches it at that moment. Returns the names of the threads whose sockets were reset.
    """
    reset: list[str] = []
    original = socket.socket.getpeername

    def getpeername(sock: socket.socket) -> Any:
        if len(reset) < times:
            reset.append(threading.current_thread().name)
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return original(sock)

    monkeypatch.setattr(socket.socket, "getpeername", getpeername)
    return reset


def test_a_blocking_connection_reset_as_it_opens_is_a_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        reset = reset_as_they_connect(monkeypatch, 1)
        url = f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}/%2F?connection_attempts=1"
        with pytest.raises(pika.exceptions.AMQPConnectionError, match="reset as it opened"):
            pikacompat.blocking_connection(pika.URLParameters(url))
    assert len(reset) == 1


def test_the_daemon_takes_a_reset_as_it_connects_for_an_unreachable_node(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        reset_as_they_connect(monkeypatch, 1)
        url = f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}/%2F"
        settings.BROADCASTER = {**settings.BROADCASTER, "BROKER_URL": url}
        with pytest.raises(BrokerUnavailable, match="reset as it opened"):
            _Link(get_settings(), prefetch=1).open(lambda conn, channel: None)


def test_only_a_value_error_raised_over_a_socket_error_is_taken_for_a_reset() -> None:
    assert pikacompat.reset_while_connecting(ValueError("a bad argument")) is None
    reset = OSError(errno.ENOTCONN, "Transport endpoint is not connected")
    raised = ValueError("Expected connected socket")
    raised.__context__ = reset  # as pika raises it, while handling the socket's error
    assert pikacompat.reset_while_connecting(raised) is reset
    other = ValueError("Expected ssl_context=None | ssl.SSLContext")
    other.__context__ = reset  # a caller's own OSError being handled when pika raised it
    assert pikacompat.reset_while_connecting(other) is None


def test_the_publisher_reconnects_after_a_reset_as_it_connects(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    tap = broker.tap()
    reset = reset_as_they_connect(monkeypatch, 2)
    publisher = Publisher(get_settings())
    try:
        for n in range(50):
            publisher.publish(message(n))
        publisher.flush(20)  # pika's ValueError used to end the I/O thread: nothing was ever sent
    finally:
        publisher.close(5)
    assert reset == ["broadcaster-publisher"] * 2
    assert [json.loads(m.body)["n"] for m in broker.drain(tap)] == list(range(50))

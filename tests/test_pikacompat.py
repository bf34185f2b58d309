"""pika's private names: the fast path while they are there, pika's public path when they are not."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from pika.adapters.utils import io_services_utils

from broadcaster import pikacompat
from broadcaster.envelope import Envelope, OutboundMessage
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

"""The publisher confirms every event, keeps order, never blocks a caller for long, and survives forks."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
from prometheus_client import REGISTRY

from broadcaster.envelope import Envelope, OutboundMessage
from broadcaster.exceptions import FlushTimeout, PublishBufferFull
from broadcaster.pikacompat import WRITE_BYTES
from broadcaster.publisher import Publisher
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.transport import get_publisher
from tests.conftest import Broker

UNREACHABLE = "amqp://guest:s3cret@127.0.0.1:1/%2F"


def message(n: int, event: str = "tests.numbered") -> OutboundMessage:
    return OutboundMessage(Envelope.new(source="tests", type=event), json.dumps({"n": n}).encode())


def numbers(broker: Broker, queue: str) -> list[int]:
    return [json.loads(m.body)["n"] for m in broker.drain(queue)]


def unreachable_settings(**changes: Any) -> BroadcasterSettings:
    return get_settings().model_copy(update={"broker_url": UNREACHABLE, **changes})


def abandon(publisher: Publisher) -> None:
    """Close a publisher whose broker never answers: the I/O thread gives up reconnecting."""
    with contextlib.suppress(FlushTimeout):
        publisher.close(0)


def test_every_event_is_confirmed_and_arrives_in_order(broker: Broker) -> None:
    tap = broker.tap()
    publisher = get_publisher()
    for n in range(2000):
        publisher.publish(message(n))
    publisher.flush(20)
    assert publisher.pending == 0
    assert numbers(broker, tap) == list(range(2000))


def record_socket_writes(monkeypatch: pytest.MonkeyPatch, send: Any = None) -> list[int]:
    """Sizes of the writes made on any socket from now on, pika's own and the publisher's."""
    writes: list[int] = []
    original = socket.socket.send

    def recording(sock: socket.socket, data: bytes, *args: Any) -> int:
        sent: int = (send or original)(sock, data, *args)
        writes.append(sent)
        return sent

    monkeypatch.setattr(socket.socket, "send", recording)
    return writes


def test_a_batch_of_publishes_is_written_to_the_socket_at_once(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = record_socket_writes(monkeypatch)
    tap = broker.tap()
    publisher = Publisher(get_settings())
    for n in range(1000):  # all buffered before the connection is up: one drain takes them
        publisher.publish(message(n))
    publisher.flush(20)
    publisher.close(5)
    assert numbers(broker, tap) == list(range(1000))
    batches = [size for size in writes if size > 100 * 300]
    assert sum(batches) > 1000 * 300, f"1000 publishes went out in {len(writes)} writes, not in batches"
    assert max(batches) < WRITE_BYTES + 1000, "a write holds at most WRITE_BYTES and one more frame"


def test_a_batch_goes_to_the_socket_without_waiting_for_the_poller(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = broker.tap()
    publisher = Publisher(get_settings())
    publisher.publish(message(0))
    publisher.flush(10)  # connected: from now on every write finds pika's buffer empty
    assert publisher._link is not None
    assert publisher._link.connection is not None
    ours = publisher._link.connection._transport  # type: ignore[attr-defined]
    buffered: list[int] = []
    write = _AsyncPlaintextTransport.write

    def buffering(transport: Any, data: bytes) -> None:
        if transport is ours:
            buffered.append(len(data))
        write(transport, data)

    monkeypatch.setattr(_AsyncPlaintextTransport, "write", buffering)
    for n in range(1, 51):
        publisher.publish(message(n))
        time.sleep(0.002)
    publisher.flush(10)
    monkeypatch.undo()
    publisher.close(5)
    assert numbers(broker, tap) == list(range(51))
    assert not buffered, f"{len(buffered)} writes waited for the poller to report the socket writable"


@pytest.mark.parametrize("refusal", ["partial", "would-block"])
def test_writes_the_socket_does_not_take_at_once_go_out_later_in_order(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    tap = broker.tap()
    publisher = Publisher(get_settings())
    publisher.publish(message(0))
    publisher.flush(10)
    assert publisher._link is not None
    connection = publisher._link.connection
    assert connection is not None
    ours = connection._transport  # type: ignore[attr-defined]
    original = socket.socket.send
    calls = itertools.count()

    def reluctant(sock: socket.socket, data: bytes, *args: Any) -> int:
        if sock is not ours._sock:
            return original(sock, data, *args)
        if refusal == "would-block" and not ours.get_write_buffer_size() and next(calls) % 2 == 0:
            raise BlockingIOError  # a write made at once, before pika buffered anything
        return original(sock, data[:700], *args)  # never more than part of a batch

    writes = record_socket_writes(monkeypatch, send=reluctant)
    for n in range(1, 301):
        publisher.publish(message(n))
        if n % 50 == 0:
            time.sleep(0.003)  # let some batches go out while others are still buffered
    publisher.flush(20)
    monkeypatch.undo()
    publisher.close(5)
    assert len(writes) > 50
    assert numbers(broker, tap) == list(range(301))
    assert publisher._link.connection is connection, "the connection must not have been lost on the way"


def test_the_io_thread_is_woken_once_for_events_in_quick_succession_and_then_rests(broker: Broker) -> None:
    publisher = Publisher(get_settings())
    publisher.publish(message(0))
    publisher.flush(10)  # connected, and the first event published
    ioloop = publisher._ioloop
    assert ioloop is not None
    wakes, drains = [], []
    wake, drain = ioloop.add_callback_threadsafe, publisher._drain
    ioloop.add_callback_threadsafe = lambda callback: (wakes.append(1), wake(callback))  # type: ignore[method-assign]
    publisher._drain = lambda: (drains.append(time.monotonic()), drain())  # type: ignore[method-assign]
    for n in range(1, 21):
        publisher.publish(message(n))
        time.sleep(0.005)
    publisher.flush(10)
    assert len(wakes) <= 1, "events sent while the I/O thread ticks must not wake it"
    time.sleep(0.5)  # longer than the I/O thread's linger after the last event
    resting_since = time.monotonic()
    time.sleep(0.2)
    assert not [at for at in drains if at > resting_since], "an idle publisher must stop ticking"
    publisher.close(5)


def test_publish_does_not_wait_for_the_broker() -> None:
    publisher = Publisher(unreachable_settings())
    started = time.perf_counter()
    for n in range(100):
        publisher.publish(message(n))
    assert time.perf_counter() - started < 0.5
    assert publisher.pending == 100
    with pytest.raises(FlushTimeout, match="100 message"):
        publisher.flush(0.3)
    abandon(publisher)


def test_full_buffer_raises_within_publish_timeout_without_leaking_the_password() -> None:
    publisher = Publisher(unreachable_settings(max_buffer=5, publish_timeout=0.3))
    for n in range(5):
        publisher.publish(message(n))
    started = time.perf_counter()
    with pytest.raises(PublishBufferFull) as caught:
        publisher.publish(message(5))
    assert 0.25 < time.perf_counter() - started < 2
    assert "MAX_BUFFER=5" in str(caught.value)
    assert "PUBLISH_TIMEOUT" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert publisher.pending == 5  # what was taken is kept
    abandon(publisher)


def test_forked_child_gets_its_own_publisher(broker: Broker) -> None:
    tap = broker.tap()
    parent = get_publisher()
    parent.publish(message(1))
    parent.flush(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            child = get_publisher()
            code = 3 if child is parent else 0
            child.publish(message(2))
            child.flush(10)
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(numbers(broker, tap)) == [1, 2]


def exit_after(broker: Broker, body: str) -> subprocess.CompletedProcess[str]:
    """Run `body` in a fresh process configured for the test exchange, which exits without flush()."""
    script = textwrap.dedent(f"""
        import django
        from django.conf import settings
        settings.configure(INSTALLED_APPS=["broadcaster"],
                           BROADCASTER={{"SERVICE_NAME": "exiting", "EXCHANGE": "{broker.exchange}"}})
        django.setup()
    """) + textwrap.dedent(body)
    env = {**os.environ, "BROADCASTER_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
    return subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, timeout=60, capture_output=True, text=True
    )


def test_process_flushes_at_exit(broker: Broker) -> None:
    tap = broker.tap()
    result = exit_after(
        broker,
        """
        from django.dispatch import Signal
        from pydantic import BaseModel
        import broadcaster

        class N(BaseModel):
            n: int

        signal = Signal()
        broadcaster.broadcast(signal, event="tests.numbered", schema=N)
        for n in range(500):
            signal.send(sender=None, n=n)
        # no flush(): the exit hook must deliver them
        """,
    )
    assert result.returncode == 0, result.stderr
    assert numbers(broker, tap) == list(range(500))


def test_events_sent_before_the_publisher_connected_are_delivered_at_exit(broker: Broker) -> None:
    # The I/O thread starts late, as on a loaded machine: the process is already exiting
    # when the publisher connects, and Python 3.12 starts no thread then (pika's own
    # address resolver used one, so these events were lost).
    tap = broker.tap()
    result = exit_after(
        broker,
        """
        import time
        from broadcaster import publisher
        from broadcaster.envelope import Envelope, OutboundMessage
        from broadcaster.transport import get_publisher

        connect = publisher._Link.connect
        def late(link):
            time.sleep(0.5)
            connect(link)
        publisher._Link.connect = late
        for n in range(3):
            envelope = Envelope.new(source="exiting", type="tests.numbered")
            get_publisher().publish(OutboundMessage(envelope, b'{"n": %d}' % n))
        # no flush(): the exit hook must connect and deliver them
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "never confirmed" not in result.stderr
    assert numbers(broker, tap) == [0, 1, 2]


@pytest.mark.faults
def test_nothing_is_lost_when_the_broker_closes_every_connection_mid_burst(broker: Broker) -> None:
    tap = broker.tap()
    publisher = get_publisher()
    total = 20_000
    published_before = REGISTRY.get_sample_value("broadcaster_published_total", {"event": "tests.numbered"}) or 0
    fault = threading.Thread(
        target=subprocess.run, args=(["rabbitmqctl", "-q", "close_all_connections", "fault test"],)
    )
    for n in range(total):
        publisher.publish(message(n))
        if n == 500:
            fault.start()
        if n % 1000 == 0:
            time.sleep(0.05)  # spread the burst over the time rabbitmqctl needs to act
    fault.join(60)
    publisher.flush(60)
    received = numbers(broker, tap)
    assert set(received) == set(range(total)), "lost events"
    duplicates = len(received) - total
    published = REGISTRY.get_sample_value("broadcaster_published_total", {"event": "tests.numbered"})
    assert published == published_before + total, "an event sent again must not be counted again"
    print(f"close_all_connections during {total} events: 0 lost, {duplicates} duplicated")

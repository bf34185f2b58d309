"""The daemon's HTTP server: /healthz (live), /readyz (ready), /metrics, and pausing a running daemon."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal
from prometheus_client import REGISTRY
from pydantic import BaseModel

import broadcaster
from broadcaster import probes
from broadcaster.consumer import Consumer
from broadcaster.management.commands.relay_outbox import relay_probes
from broadcaster.outbox import Relay
from tests.conftest import Broker, wait_for

EVENT = "probes.pinged"


class Pinged(BaseModel):
    n: int


pinged = Signal()


def get(url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a probe."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def received() -> list[int]:
    broadcaster.broadcast(pinged, event=EVENT, schema=Pinged)
    calls: list[int] = []
    broadcaster.subscribe(EVENT, schema=Pinged).connect(lambda n, **kw: calls.append(n), weak=False)
    return calls


@pytest.fixture
def served(broker: Broker, daemon: Any, received: list[int]) -> Iterator[tuple[Consumer, str]]:
    consumer = daemon()
    server = probes.serve(0, consumer.live, consumer.ready, host="127.0.0.1")
    yield consumer, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_consuming_daemon_is_live_and_ready_and_serves_metrics(served: tuple[Consumer, str]) -> None:
    _, base = served
    status, body = get(f"{base}/healthz")
    assert (status, body["status"], body["running"], body["paused"]) == (200, "ok", True, False)
    status, body = get(f"{base}/readyz")
    assert (status, body["status"], body["connected"], body["consuming"], body["paused"]) == (
        200,
        "ok",
        True,
        True,
        False,
    )
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        assert "broadcaster_paused" in response.read().decode()


def test_a_paused_daemon_is_live_but_not_ready_and_leaves_messages_queued(
    served: tuple[Consumer, str], broker: Broker, received: list[int]
) -> None:
    consumer, base = served
    consumer.control.request_toggle()  # what SIGUSR1 does
    wait_for(lambda: get(f"{base}/readyz")[0] == 503, "/readyz to answer 503")
    assert REGISTRY.get_sample_value("broadcaster_paused") == 1
    status, body = get(f"{base}/healthz")
    assert (status, body["paused"], body["pause_reason"], body["consuming"]) == (200, True, "operator", False)
    for n in range(3):
        pinged.send(sender=None, n=n)
    broadcaster.flush(10)
    wait_for(lambda: broker.count(consumer.topology.queue) == 3, "the events to wait in the queue")
    assert received == []
    consumer.control.request_toggle()
    wait_for(lambda: sorted(received) == [0, 1, 2], "the events handled after resuming")
    assert get(f"{base}/readyz")[0] == 200
    assert REGISTRY.get_sample_value("broadcaster_paused") == 0


def test_a_stopped_daemon_is_neither_live_nor_ready(served: tuple[Consumer, str]) -> None:
    consumer, base = served
    consumer.stop()
    wait_for(lambda: not consumer._running, "the daemon to stop")
    assert get(f"{base}/healthz")[0] == 503
    assert get(f"{base}/readyz")[0] == 503


def test_unknown_paths_are_not_found(served: tuple[Consumer, str]) -> None:
    _, base = served
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{base}/nothing", timeout=5)
    caught.value.close()
    assert caught.value.code == 404


def test_relay_outbox_probes_follow_its_loop_and_its_last_round() -> None:
    relay, stop = Relay(), threading.Event()
    live, ready = relay_probes(relay, stop)
    assert live()[0]
    assert ready()[0]
    relay.failing = True  # the last round did not reach the database or the broker
    assert ready() == (False, {"failing": True, "published": 0})
    assert live()[0]
    relay.turned -= 3600  # a loop that has not turned for an hour is stuck
    assert not live()[0]
    stop.set()
    relay.turned += 3600
    assert not live()[0]

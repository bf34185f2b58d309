"""Pause instead of drain: the kill switch, --pause/--resume, SIGUSR1 and the probes, on real daemons."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.broker_admin import rabbitmqctl, vhost_user
from tests.integration.conftest import Broker, Daemon, Service, wait_for

# Small numbers, so that each test takes seconds: three events judge, half failing trips.
KILL_SWITCH = {
    "KILL_SWITCH_RATIO": "0.5",
    "KILL_SWITCH_MIN_EVENTS": "3",
    "KILL_SWITCH_WINDOW": "30",
    "KILL_SWITCH_COOLDOWN": "2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of /healthz or /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())
    except OSError:
        return 0, {}  # not listening yet


def ready_is(port: int, status: int) -> Callable[[], bool]:
    return lambda: probe(port, "/readyz")[0] == status


def handled_ids(service: Service) -> set[str]:
    return {record["id"] for record in service.records()}


def test_a_failing_dependency_pauses_the_daemon_with_the_messages_queued_then_it_resumes(
    service: Callable[..., Service], rabbit: Broker, tmp_path: Path
) -> None:
    down = tmp_path / "dependency-down"
    down.touch()
    port = free_port()
    consumer = service("paused", "consumer", FAIL_WHILE=str(down), RETRY_DELAYS="1,1,1,1", **KILL_SWITCH)
    daemon = consumer.daemon("--metrics-port", str(port))
    wait_for(ready_is(port, 200), 10, "/readyz 200 while consuming")
    service("pinger", "producer").fire("ping", {"n": 1}, count=20)

    wait_for(lambda: "kill switch tripped" in daemon.log(), 10, "the kill switch to trip")
    wait_for(ready_is(port, 503), 5, "/readyz 503 while paused")
    status, health = probe(port, "/healthz")
    assert (status, health["paused"], health["pause_reason"]) == (200, True, "tripped")
    # Three or four failed and wait in the delay queue; the rest went back to the queue unhandled.
    wait_for(lambda: rabbit.count(consumer.queue) >= 16, 5, "the unhandled events back in the queue")
    assert rabbit.count(consumer.dead_letter_queue) == 0
    assert consumer.records() == []

    # Still failing after the cool-down: it pauses again rather than draining the queue.
    wait_for(lambda: daemon.log().count("kill switch tripped") >= 2, 15, "a second pause")
    assert rabbit.count(consumer.dead_letter_queue) == 0

    down.unlink()
    wait_for(lambda: len(handled_ids(consumer)) == 20, 30, "every event handled once the dependency is back")
    assert "cool-down over; consuming again" in daemon.log()
    assert rabbit.count(consumer.dead_letter_queue) == 0
    wait_for(ready_is(port, 200), 5, "/readyz 200 once consuming again")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert "broadcaster_paused 0.0" in metrics
    assert 'broadcaster_pauses_total{reason="tripped"}' in metrics


def test_an_operator_pause_reaches_every_daemon_and_holds_until_resumed(
    service: Callable[..., Service], rabbit: Broker
) -> None:
    consumer = service("held", "consumer")
    pinger = service("pinger", "producer")
    # Before any daemon runs: recorded, so that the daemons that start stay paused.
    assert "no daemon is running now" in consumer.manage("consume_signals", "--pause")
    port = free_port()
    first = consumer.daemon("--metrics-port", str(port))
    second = consumer.daemon()
    wait_for(ready_is(port, 503), 10, "/readyz 503 of a daemon started paused")
    assert probe(port, "/healthz")[1]["pause_reason"] == "operator"
    pinger.fire("ping", {"n": 1}, count=5)
    wait_for(lambda: rabbit.count(consumer.queue) == 5, 10, "the events to wait in the queue")

    assert "no daemon is running now" not in consumer.manage("consume_signals", "--resume")
    wait_for(lambda: len(handled_ids(consumer)) == 5, 10, "the events handled once resumed")
    wait_for(ready_is(port, 200), 5, "/readyz 200 once resumed")
    consumer.manage("consume_signals", "--pause")
    wait_for(ready_is(port, 503), 5, "/readyz 503 once paused again")
    pinger.fire("ping", {"n": 2}, count=3)
    wait_for(lambda: rabbit.count(consumer.queue) == 3, 10, "the new events to wait in the queue")
    for daemon in (first, second):
        assert "paused by an operator" in daemon.log()
    consumer.manage("consume_signals", "--resume")
    wait_for(lambda: len(handled_ids(consumer)) == 8, 10, "every event handled")
    for daemon in (first, second):
        daemon.stop()


def test_sigusr1_toggles_one_daemon(service: Callable[..., Service], rabbit: Broker) -> None:
    consumer = service("toggled", "consumer")
    port = free_port()
    daemon: Daemon = consumer.daemon("--metrics-port", str(port))
    wait_for(ready_is(port, 200), 10, "/readyz 200 while consuming")
    daemon.proc.send_signal(signal.SIGUSR1)
    wait_for(ready_is(port, 503), 5, "/readyz 503 after SIGUSR1")
    service("pinger", "producer").fire("ping", {"n": 1}, count=2)
    wait_for(lambda: rabbit.count(consumer.queue) == 2, 10, "the events to wait in the queue")
    daemon.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: len(handled_ids(consumer)) == 2, 10, "the events handled after the second SIGUSR1")
    assert probe(port, "/readyz")[0] == 200
    log = daemon.stop()
    assert "SIGUSR1 received: pausing" in log
    assert "SIGUSR1 received: resuming" in log


def test_a_disconnected_daemon_is_live_but_not_ready(service: Callable[..., Service]) -> None:
    with vhost_user("probes") as user:
        consumer = service("cut", "consumer", BROADCASTER_BROKER_URL=user.url(), RECONNECT_MAX_DELAY="1")
        port = free_port()
        consumer.daemon("--metrics-port", str(port))
        wait_for(ready_is(port, 200), 10, "/readyz 200 while consuming")
        rabbitmqctl("clear_permissions", "-p", user.vhost, user.name)  # it cannot come back...
        listing = rabbitmqctl("list_connections", "pid", "vhost", "--no-table-headers", "-q")
        for line in listing.splitlines():
            pid, _, vhost = line.partition("\t")
            if vhost == user.vhost:  # this test's daemon only: the broker is shared
                rabbitmqctl("close_connection", pid, "probe test: connection cut")  # ...once cut
        wait_for(ready_is(port, 503), 10, "/readyz 503 while disconnected")
        status, health = probe(port, "/healthz")
        assert (status, health["running"]) == (200, True)
        rabbitmqctl("set_permissions", "-p", user.vhost, user.name, ".*", ".*", ".*")
        wait_for(ready_is(port, 200), 20, "/readyz 200 once reconnected")

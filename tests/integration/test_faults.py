"""Fault injection: the broker restarts, drops connections, raises a memory alarm; daemons die.

Every test sends a known set of events numbered in their payload (``n``) and classifies
what the receivers saw: a number never seen is lost, one seen twice is duplicated, a
number not sent (or one number under two envelope ids) is unexpected. Lost and
unexpected must be zero; duplicates are what at-least-once allows, and are reported.
The ``faults`` fixture leaves the broker running, without alarm, whatever happens.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Broker, Daemon, Service, wait_for

pytestmark = pytest.mark.faults

WATERMARK = "0.4"  # the broker's setting to restore after a memory alarm
FAST_RECONNECT = {"RECONNECT_MAX_DELAY": "1"}
POSTGRES = "host=127.0.0.1 user=postgres dbname=test"


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def memory_alarm_on() -> bool:
    return "memory" in rabbitmqctl("eval", "rabbit_alarm:get_alarms().")


class Faults:
    """What the tests do to the broker; the test's own connection is opened again after each."""

    def __init__(self, rabbit: Broker) -> None:
        self.rabbit = rabbit

    def stop_app(self) -> None:
        rabbitmqctl("stop_app")

    def start_app(self) -> None:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        self.rabbit.reconnect()

    def close_all_connections(self) -> None:
        rabbitmqctl("close_all_connections", "fault-injection test")
        self.rabbit.reconnect()

    def memory_alarm(self, on: bool) -> None:
        rabbitmqctl("set_vm_memory_high_watermark", "0" if on else WATERMARK)
        wait_for(lambda: memory_alarm_on() == on, 15, f"the memory alarm to be {'on' if on else 'off'}")


@pytest.fixture
def faults(rabbit: Broker) -> Iterator[Faults]:
    """Fault injection, and the broker as it was afterwards, even when the test failed."""
    try:
        yield Faults(rabbit)
    finally:
        rabbitmqctl("start_app")  # a no-op when it runs
        rabbitmqctl("set_vm_memory_high_watermark", WATERMARK)
        rabbitmqctl("await_startup")
        wait_for(lambda: not memory_alarm_on(), 15, "the memory alarm to clear")
        rabbit.reconnect()  # for the rabbit fixture's clean-up


@pytest.fixture
def postgres(prefix: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL database of the test's own, as service env settings."""
    name = prefix.replace("-", "_")
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield {"DB_ENGINE": "postgresql", "DB_NAME": name}
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def query(service: Service, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` on the service's database (PostgreSQL or its SQLite file)."""
    if service.env.get("DB_ENGINE") == "postgresql":
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={service.env['DB_NAME']}") as conn:
            return conn.execute(sql).fetchall()
    # closing(): a sqlite3 connection's own `with` only commits, and Python 3.13 warns
    # (ResourceWarning) about every connection left open.
    with closing(sqlite3.connect(service.env["DB_PATH"])) as conn:
        return conn.execute(sql).fetchall()


def unpublished(service: Service) -> int:
    [(count,)] = query(service, "SELECT count(*) FROM broadcaster_outboxevent WHERE published_at IS NULL")
    return int(count)


@dataclass
class Tally:
    sent: int
    lost: list[int]
    duplicated: int
    unexpected: list[Any]

    def line(self, label: str) -> str:
        return (
            f"{label}: {self.sent} sent, {len(self.lost)} lost, {self.duplicated} duplicated, "
            f"{len(self.unexpected)} unexpected"
        )


def classify(sent: Iterable[int], seen: Iterable[tuple[Any, str]]) -> Tally:
    """Compare the numbers sent with the (n, envelope id) pairs the receivers saw."""
    expected = set(sent)
    counts: Counter[Any] = Counter()
    ids: dict[Any, set[str]] = defaultdict(set)
    for n, event_id in seen:
        counts[n] += 1
        ids[n].add(event_id)
    unexpected: list[Any] = [n for n in counts if n not in expected]
    unexpected += [(n, sorted(several)) for n, several in ids.items() if len(several) > 1]  # one n, two events
    duplicated = sum(count - 1 for n, count in counts.items() if n in expected)
    return Tally(len(expected), sorted(expected - set(counts)), duplicated, unexpected)


def received(service: Service) -> list[tuple[Any, str]]:
    """(n, envelope id) of every relay.ping the service's receivers recorded; other events as unexpected."""
    return [
        (r["payload"].get("n"), r["id"]) if r["type"] == "relay.ping" else ((r["type"], r["id"]), r["id"])
        for r in service.records()
    ]


def settle(rabbit: Broker, service: Service, sent: Iterable[int], timeout: float = 30.0) -> list[tuple[Any, str]]:
    """Wait until every number sent was received and the queue is drained; return what was received."""
    expected = set(sent)
    deadline = time.monotonic() + timeout
    while not expected <= {n for n, _ in received(service)} and time.monotonic() < deadline:
        time.sleep(0.05)
    # Then let late duplicates arrive: the queue empty and no new record for a moment.
    quiet_since, count = time.monotonic(), len(service.records())
    while time.monotonic() < min(deadline, quiet_since + 10) and time.monotonic() - quiet_since < 0.5:
        time.sleep(0.05)
        now = len(service.records())
        if now != count or rabbit.count(service.queue):
            quiet_since, count = time.monotonic(), now
    return received(service)


def check(tally: Tally, label: str, summarize: Callable[[str], None]) -> None:
    summarize(tally.line(label))
    assert tally.lost == [], f"{label}: lost {tally.lost[:50]}"
    assert tally.unexpected == [], f"{label}: unexpected {tally.unexpected[:50]}"


def burst(count: int, *, pace: float = 0.0, start: int = 0) -> list[str]:
    """`fire` arguments: ping n=start..start+count-1, each send its own transaction, `pace` s apart."""
    numbered = ["--sequence", str(start), "--count", str(count)]
    return ["fire", "ping", *numbered, "--each", "--pace", str(pace), "--flush-timeout", "60"]


def wait_started(process: Daemon, text: str) -> None:
    wait_for(lambda: text in process.log() or not process.alive, 20, text)
    assert process.alive, process.log()


# -- broker restarted -------------------------------------------------------------------


def test_broker_restart_during_burst_on_commit(
    rabbit: Broker, faults: Faults, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", **FAST_RECONNECT)
    orders = service("orders", "producer", **FAST_RECONNECT)
    daemon = shipping.daemon()
    producer = orders.spawn(*burst(2000, pace=0.002))
    shipping.wait_records(200, timeout=20)

    faults.stop_app()
    assert producer.alive, "the burst ended before the broker stopped: nothing was tested"
    faults.start_app()

    producer.wait_exit(timeout=60)  # its flush succeeded: every send() was confirmed
    tally = classify(range(2000), settle(rabbit, shipping, range(2000)))
    check(tally, "broker restart, on-commit", summarize)
    assert daemon.alive
    assert "consume_signals: reconnected" in daemon.log()


def outbox_service(service: Callable[..., Service], database: dict[str, str]) -> Service:
    orders = service(
        "orders",
        "producer",
        PUBLISH_MODE="outbox",
        OUTBOX_POLL_INTERVAL="0.2",
        PUBLISH_TIMEOUT="2",
        SHUTDOWN_TIMEOUT="2",
        **FAST_RECONNECT,
        **database,
    )
    orders.manage("migrate", "--verbosity", "0")
    return orders


def test_broker_restart_during_burst_outbox(
    rabbit: Broker,
    faults: Faults,
    postgres: dict[str, str],
    service: Callable[..., Service],
    summarize: Callable[[str], None],
) -> None:
    shipping = service("shipping", "consumer", **FAST_RECONNECT)
    orders = outbox_service(service, postgres)
    daemon = shipping.daemon()
    wait_started(orders.spawn("relay_outbox"), "relay_outbox: started")
    producer = orders.spawn(*burst(2000, pace=0.002))
    shipping.wait_records(200, timeout=20)

    faults.stop_app()
    assert producer.alive, "the burst ended before the broker stopped: nothing was tested"
    faults.start_app()

    producer.wait_exit(timeout=60)
    tally = classify(range(2000), settle(rabbit, shipping, range(2000), timeout=60))
    check(tally, "broker restart, outbox", summarize)
    assert unpublished(orders) == 0
    assert daemon.alive


def test_broker_down_at_commit_outbox(
    rabbit: Broker,
    faults: Faults,
    postgres: dict[str, str],
    service: Callable[..., Service],
    summarize: Callable[[str], None],
) -> None:
    shipping = service("shipping", "consumer", **FAST_RECONNECT)
    orders = outbox_service(service, postgres)
    shipping.daemon()
    wait_started(orders.spawn("relay_outbox"), "relay_outbox: started")

    faults.stop_app()
    orders.manage("fire", "ping", "--sequence", "0", "--count", "300")  # commits while the broker is down
    assert unpublished(orders) == 300, "the rows must wait for the broker"
    assert shipping.records() == []
    faults.start_app()

    tally = classify(range(300), settle(rabbit, shipping, range(300), timeout=60))
    check(tally, "broker down at commit, outbox", summarize)
    wait_for(lambda: unpublished(orders) == 0, 10, "the outbox rows to be stamped published")


# -- connections closed by the broker -----------------------------------------------------


def test_connections_closed_during_publishing(
    rabbit: Broker, faults: Faults, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", **FAST_RECONNECT)
    orders = service("orders", "producer", **FAST_RECONNECT)
    daemon = shipping.daemon()
    producer = orders.spawn(*burst(2000, pace=0.002))
    for seen in (300, 1000):
        shipping.wait_records(seen, timeout=20)
        assert producer.alive, "the burst ended before the connections were closed: nothing was tested"
        faults.close_all_connections()

    producer.wait_exit(timeout=60)
    tally = classify(range(2000), settle(rabbit, shipping, range(2000)))
    check(tally, "connections closed while publishing", summarize)
    assert "publisher lost its connection" in producer.log()
    assert daemon.alive


def test_connections_closed_during_consuming(
    rabbit: Broker, faults: Faults, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", RECEIVER_SLEEP="0.003", **FAST_RECONNECT)
    orders = service("orders", "producer")
    daemon = shipping.daemon()
    orders.manage("fire", "ping", "--sequence", "0", "--count", "1000")
    shipping.wait_records(200, timeout=20)
    assert rabbit.count(shipping.queue) > 0, "consumed already: nothing was tested"
    faults.close_all_connections()

    tally = classify(range(1000), settle(rabbit, shipping, range(1000)))
    check(tally, "connections closed while consuming", summarize)
    assert daemon.alive
    assert "consume_signals: reconnected" in daemon.log()


# -- daemons killed or stopped ------------------------------------------------------------


def test_sigkill_in_receiver_redelivers_to_next_daemon(
    rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shipping = service("shipping", "consumer", KILL_AT="20")
    orders = service("orders", "producer")
    first = shipping.daemon("--prefetch", "10")
    orders.manage("fire", "ping", "--sequence", "0", "--count", "50")
    assert first.proc.wait(timeout=20) == -signal.SIGKILL
    assert 20 not in {n for n, _ in received(shipping)}

    second = shipping.daemon("--prefetch", "10")
    tally = classify(range(50), settle(rabbit, shipping, range(50)))
    check(tally, "SIGKILL in a receiver", summarize)
    [redelivered] = [r for r in shipping.records() if r["payload"]["n"] == 20]
    assert redelivered["pid"] == second.proc.pid


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """Env settings of a service's database; request it before `service` (teardown order)."""
    return request.getfixturevalue("postgres") if request.param == "postgresql" else {}


@pytest.mark.parametrize("kill_when", ["receiver", "after-commit"])
def test_sigkill_with_inbox_has_effect_once(
    rabbit: Broker,
    database: dict[str, str],
    service: Callable[..., Service],
    summarize: Callable[[str], None],
    kill_when: str,
) -> None:
    shipping = service("shipping", "inbox", KILL_AT="20", KILL_WHEN=kill_when, **database)
    shipping.manage("migrate", "--verbosity", "0")
    orders = service("orders", "producer")
    first = shipping.daemon("--prefetch", "10")
    orders.manage("fire", "ping", "--sequence", "0", "--count", "50")
    assert first.proc.wait(timeout=20) == -signal.SIGKILL

    second = shipping.daemon("--prefetch", "10")
    settle(rabbit, shipping, range(50))
    effects = query(shipping, "SELECT n, event_id FROM relay_effect")
    tally = classify(range(50), effects)
    engine = database.get("DB_ENGINE", "sqlite")
    check(tally, f"SIGKILL {kill_when}, inbox on {engine} (DB effects)", summarize)
    assert tally.duplicated == 0, "the inbox must keep the effect to once"
    assert query(shipping, "SELECT count(*) FROM broadcaster_inboxentry") == [(50,)]
    if kill_when == "after-commit":
        assert "already handled (inbox)" in second.log(), "the committed event was not redelivered: nothing tested"


def test_sigterm_during_burst(
    rabbit: Broker, service: Callable[..., Service], summarize: Callable[[str], None]
) -> None:
    shutdown_timeout = 5.0
    shipping = service("shipping", "consumer", RECEIVER_SLEEP="0.003", SHUTDOWN_TIMEOUT=str(shutdown_timeout))
    orders = service("orders", "producer")
    first = shipping.daemon()
    orders.manage("fire", "ping", "--sequence", "0", "--count", "1000")
    shipping.wait_records(200, timeout=20)

    started = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    first.wait_exit(timeout=shutdown_timeout + 5)
    took = time.monotonic() - started
    assert took <= shutdown_timeout, f"the daemon took {took:.1f} s to stop"
    assert len(shipping.records()) < 1000, "the burst was over before SIGTERM: nothing was tested"

    shipping.daemon()
    tally = classify(range(1000), settle(rabbit, shipping, range(1000)))
    check(tally, "SIGTERM during a burst", summarize)


# -- memory alarm -------------------------------------------------------------------------


def test_memory_alarm_bounds_send_and_loses_nothing_accepted(
    rabbit: Broker,
    faults: Faults,
    service: Callable[..., Service],
    tmp_path: Path,
    summarize: Callable[[str], None],
) -> None:
    publish_timeout = 1.0
    shipping = service("shipping", "consumer")
    orders = service("orders", "producer", MAX_BUFFER="20", PUBLISH_TIMEOUT=str(publish_timeout))
    shipping.daemon()
    report = tmp_path / "report.json"

    faults.memory_alarm(on=True)
    producer = orders.spawn(*burst(100), "--max-refusals", "3", "--report", str(report))
    wait_for(report.exists, 30, "the producer to finish sending")
    sends = json.loads(report.read_text())
    assert sends["slowest"] <= publish_timeout + 0.5, f"send() blocked {sends['slowest']:.1f} s"
    assert sends["refused"], "no send() was refused: the buffer never filled, nothing was tested"
    assert producer.alive, "the producer's flush must wait for the alarm to clear"
    faults.memory_alarm(on=False)

    producer.wait_exit(timeout=60)
    tally = classify(sends["accepted"], settle(rabbit, shipping, sends["accepted"]))
    check(tally, "memory alarm", summarize)
    summarize(f"memory alarm: {len(sends['refused'])} send() refused, slowest send() {sends['slowest']:.2f} s")

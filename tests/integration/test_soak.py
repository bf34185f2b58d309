"""Soak: numbered events at a steady rate while faults land at random, in each publish mode.

A producer sends ``ping`` n=0..N-1, each send() in its own transaction, at a steady pace.
Meanwhile, at random moments, one fault at a time: the broker closes this test's own
connections (found by the connection_name the library gives them, which carries the
service name), the consumer daemon is SIGKILLed and started again, or the broker's app is
stopped and started (an outage shorter than PUBLISH_TIMEOUT). At the end every send()
returned (none refused), nothing is lost, and the duplicates at-least-once allows are
counted and reported. It stops the broker's app: run it under the exclusive broker lock.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Broker, Daemon, Service, wait_for
from tests.integration.test_faults import (  # noqa: F401 - `faults` and `postgres` are fixtures
    FAST_RECONNECT,
    Faults,
    check,
    classify,
    faults,
    postgres,
    rabbitmqctl,
    settle,
    unpublished,
    wait_started,
)

pytestmark = pytest.mark.faults

PUBLISH_TIMEOUT = 30.0  # every outage below is shorter (stop_app + start_app take 5-17 s here)
RUN_SECONDS = 60.0  # the producer's steady run, per mode: long enough for several faults to land
# Sends a mode manages in RUN_SECONDS on a slow machine (an SQLite commit may cost ~30 ms);
# on a fast one the producer keeps to its schedule, so the run lasts RUN_SECONDS all the same.
COUNT = {"on_commit": 2400, "outbox-postgresql": 1800, "outbox-sqlite": 1400}


def close_own_connections(names: list[str]) -> int:
    """Have the broker close the connections whose connection_name holds one of `names`."""
    listing = rabbitmqctl("list_connections", "pid", "client_properties", "--no-table-headers", "-q")
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if any(name in line for name in names)]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "soak test: connection cut")
    return len(pids)


class Soak:
    """Applies faults one at a time, at random, until the producer is done; counts them."""

    def __init__(self, injector: Faults, consumer: Service, names: list[str]) -> None:
        self.faults, self.consumer, self.names = injector, consumer, names
        self.daemon = consumer.daemon()
        self.applied: Counter[str] = Counter()
        self.longest_outage = 0.0

    def run(self, producer: Daemon, rng: random.Random) -> None:
        while producer.alive:
            time.sleep(rng.uniform(1.0, 4.0))
            if not producer.alive:
                break
            fault = rng.choice(["cut", "kill", "broker"])
            getattr(self, f"_{fault}")(rng)
            self.applied[fault] += 1

    def _cut(self, _rng: random.Random) -> None:
        assert close_own_connections(self.names) > 0, "no connection of this test found to cut"

    def _kill(self, _rng: random.Random) -> None:
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(10)
        self.daemon = self.consumer.daemon()

    def _broker(self, rng: random.Random) -> None:
        started = time.monotonic()
        self.faults.stop_app()
        time.sleep(rng.uniform(0.5, 3.0))
        self.faults.start_app()
        self.longest_outage = max(self.longest_outage, time.monotonic() - started)

    def line(self) -> str:
        kinds = ", ".join(f"{count} {name}" for name, count in sorted(self.applied.items()))
        return f"{sum(self.applied.values())} faults ({kinds}), longest outage {self.longest_outage:.1f} s"


@pytest.mark.parametrize("mode", ["on_commit", "outbox-postgresql", "outbox-sqlite"])
def test_soak_under_random_faults(
    rabbit: Broker, request: pytest.FixtureRequest, service: Callable[..., Service], tmp_path: Path, mode: str
) -> None:
    injector: Faults = request.getfixturevalue("faults")
    summarize: Callable[[str], None] = request.getfixturevalue("summarize")
    database = request.getfixturevalue("postgres") if mode == "outbox-postgresql" else {}
    tag = uuid.uuid4().hex[:8]  # in the connection names of this test's services only
    names = [f"soak{tag}-shipping", f"soak{tag}-orders"]
    common = {"PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT), "SHUTDOWN_TIMEOUT": "5", **FAST_RECONNECT}
    shipping = service(names[0], "consumer", **common)
    outbox = {"PUBLISH_MODE": "outbox", "OUTBOX_POLL_INTERVAL": "0.2"} if mode != "on_commit" else {}
    orders = service(names[1], "producer", **common, **outbox, **database)
    if outbox:
        orders.manage("migrate", "--verbosity", "0")
        wait_started(orders.spawn("relay_outbox"), "relay_outbox: started")
    soak = Soak(injector, shipping, names)
    report = tmp_path / "report.json"
    count = COUNT[mode]
    fire = ["fire", "ping", "--sequence", "0", "--count", str(count), "--each", "--seconds", str(RUN_SECONDS)]
    producer = orders.spawn(*fire, "--report", str(report), "--flush-timeout", "120")
    seed = random.randrange(2**32)
    soak.run(producer, random.Random(seed))

    producer.wait_exit(timeout=150)  # send() never raised, and the final flush was confirmed
    sends = json.loads(report.read_text())
    assert sends["refused"] == [], f"{len(sends['refused'])} send() refused during outages"
    tally = classify(range(count), settle(rabbit, shipping, range(count), timeout=120))
    summary = f"soak {mode}: {soak.line()}; slowest send() {sends['slowest']:.2f} s; seed {seed}"
    summarize(summary)
    check(tally, f"soak {mode}", summarize)
    assert sum(soak.applied.values()) >= 4, f"too few faults landed: {summary}"
    assert soak.longest_outage < PUBLISH_TIMEOUT, "an outage outlasted PUBLISH_TIMEOUT: send() may then fail"
    if outbox:
        assert unpublished(orders) == 0
    assert soak.daemon.alive


def test_close_own_connections_spares_other_services(service: Callable[..., Service], rabbit: Broker) -> None:
    ours = service(f"soak{uuid.uuid4().hex[:8]}-shipping", "consumer")
    theirs = service(f"soak{uuid.uuid4().hex[:8]}-shipping", "consumer")
    ours_daemon, their_daemon = ours.daemon(), theirs.daemon()
    assert close_own_connections([ours.name]) == 1
    assert close_own_connections([f"soak{uuid.uuid4().hex[:8]}"]) == 0
    wait_for(lambda: "consume_signals: reconnected" in ours_daemon.log(), 20, "our daemon to reconnect")
    assert "consume_signals: reconnected" not in their_daemon.log()

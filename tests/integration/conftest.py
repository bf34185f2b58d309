"""Services as separate processes over the real RabbitMQ.

Each test gets its own exchange and queue names (a uuid prefix), so tests never see
each other's messages, and everything they declared is deleted at teardown. A service
is the Django project in ``project/`` run with env settings: ``daemon()`` starts its
``consume_signals``, ``fire()`` runs its ``fire`` command to completion.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.helpers import BROKER_URL, Received

MANAGE = Path(__file__).parent / "project" / "manage.py"
DEFAULT_RETRY_DELAYS = (1.0, 10.0, 60.0, 300.0)
STARTED = "consume_signals: started"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Broker:
    """A pika connection of the test itself: publish by hand, read and count queues."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.queues: set[str] = set()
        self.reconnect()

    def reconnect(self) -> None:
        """Open the connection again: after the broker closed it (the fault tests) or at start."""
        if (old := getattr(self, "connection", None)) is not None:
            _release(old)
        self.connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)

    def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = "application/json",
        **properties: Any,
    ) -> None:
        """Publish one raw message to the test's exchange (confirmed by the broker)."""
        props = pika.BasicProperties(content_type=content_type, headers=headers, delivery_mode=2, **properties)
        self.channel.basic_publish(self.exchange, routing_key, body, props, mandatory=True)

    def publish_event(self, event: str, data: Any, **attributes: str) -> str:
        """Publish a binary-mode CloudEvent as another producer would; return its id."""
        return self.publish_raw_json(event, json.dumps(data), **attributes)

    def publish_raw_json(self, event: str, payload: str, **attributes: str) -> str:
        """Publish a binary-mode CloudEvent whose body is `payload` as written; return its id."""
        headers = {
            "ce-specversion": "1.0",
            "ce-id": str(uuid.uuid4()),
            "ce-source": "integration-test",
            "ce-type": event,
            **{f"ce-{name}": value for name, value in attributes.items()},
        }
        self.publish(event, payload.encode(), headers=headers)
        return headers["ce-id"]

    def observe(self, *events: str) -> str:
        """Declare a queue bound to `events` on the exchange, to see what is published."""
        name = f"{self.exchange}.observer.{uuid.uuid4().hex[:6]}"
        self.channel.queue_declare(name, durable=True)  # RabbitMQ 4.3 refuses transient non-exclusive queues
        self.queues.add(name)
        for event in events:
            self.channel.queue_bind(name, self.exchange, routing_key=event)
        return name

    def bind(self, queue: str, routing_key: str) -> None:
        self.channel.queue_bind(queue, self.exchange, routing_key=routing_key)

    def get(self, queue: str) -> Received | None:
        method, properties, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else Received(method.routing_key, properties, body)

    def take(self, queue: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait for `count` messages on `queue` and consume them."""
        taken: list[Received] = []

        def enough() -> bool:
            while len(taken) < count and (message := self.get(queue)):
                taken.append(message)
            return len(taken) >= count

        wait_for(enough, timeout, f"{count} message(s) on {queue}")
        return taken

    def take_all(self, queue: str) -> list[Received]:
        """Consume whatever is ready on `queue` now."""
        taken = []
        while message := self.get(queue):
            taken.append(message)
        return taken

    def count(self, queue: str) -> int:
        """Messages ready on `queue` (unacknowledged deliveries are not counted)."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def close(self) -> None:
        if not self.connection.is_open:
            self.reconnect()
        channel = self.connection.channel()
        for queue in self.queues:
            channel.queue_delete(queue)
            channel.exchange_delete(f"{queue}.requeue")  # a service queue's own; a no-op for the others
            channel.exchange_delete(f"{queue}.partitions")  # likewise, with ordered subscriptions
            channel.exchange_delete(f"{queue}.control")  # likewise: the daemons' control exchange
            channel.exchange_delete(f"{queue}.paused")
        channel.exchange_delete(self.exchange)
        self.connection.close()


def _release(connection: pika.BlockingConnection) -> None:
    try:
        connection.process_data_events(0)  # notices a close by the broker, and frees its sockets
        if connection.is_open:
            connection.close()
    except pika.exceptions.AMQPError:
        pass


@dataclass
class Service:
    """One service of a test: its env, its queues and what its receivers recorded."""

    name: str
    env: dict[str, str]
    retry_delays: tuple[float, ...]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.env["QUEUE"]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead-letter"

    @property
    def queues(self) -> list[str]:
        retry = [f"{self.queue}.delay.{round(delay * 1000)}ms" for delay in self.retry_delays]
        partitions = [f"{self.queue}.partition.{i}" for i in range(int(self.env.get("PARTITIONS", "0")))]
        return [self.queue, self.dead_letter_queue, *retry, *partitions]

    def records(self) -> list[dict[str, Any]]:
        """One dict per event a receiver of this service handled, in order."""
        path = Path(self.env["RECORD_FILE"])
        if not path.exists():
            return []
        complete = path.read_text().split("\n")[:-1]  # a line still being written has no newline yet
        return [json.loads(line) for line in complete]

    def wait_records(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.records()) >= count, timeout, f"{count} record(s) of {self.name}")
        return self.records()

    def fire(
        self,
        signal_name: str,
        data: dict[str, Any],
        *,
        count: int = 1,
        rollback: bool = False,
        flush: bool = True,
        keys: int | None = None,
    ) -> None:
        """Send a signal in a short-lived process of this service, which flushes before exiting."""
        args = ["fire", signal_name, "--data", json.dumps(data), "--count", str(count)]
        args += ["--rollback"] * rollback + ["--no-flush"] * (not flush) + (["--keys", str(keys)] if keys else [])
        result = subprocess.run(
            [sys.executable, str(MANAGE), *args], env=self.env, capture_output=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr.decode()

    def daemon(self, *args: str) -> Daemon:
        """Start `consume_signals` and wait until it consumes; it is stopped at teardown."""
        log = Path(self.env["RECORD_FILE"]).with_suffix(f".daemon{len(self.procs)}.log")
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(MANAGE), "consume_signals", *args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.procs.append(proc)
        daemon = Daemon(proc, log)
        wait_for(lambda: STARTED in daemon.log() or proc.poll() is not None, 20, "consume_signals to start")
        assert proc.poll() is None, f"consume_signals exited:\n{daemon.log()}"
        return daemon

    def manage(self, *args: str, timeout: float = 60) -> str:
        """Run a management command of this service to completion; return its stdout."""
        result = subprocess.run(
            [sys.executable, str(MANAGE), *args], env=self.env, capture_output=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    def spawn(self, *args: str) -> Daemon:
        """Start a management command in the background (stopped at teardown); stderr goes to its log."""
        log = Path(self.env["RECORD_FILE"]).with_suffix(f".proc{len(self.procs)}.log")
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(MANAGE), *args], env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.procs.append(proc)
        return Daemon(proc, log)

    def stop_all(self) -> None:
        for proc in self.procs:
            _stop(proc)


@dataclass
class Daemon:
    """A running `consume_signals` and its log (stderr)."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        """Stop it as an operator would (SIGTERM); return its log after a clean exit."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def wait_exit(self, timeout: float = 15.0) -> str:
        """Wait for a clean exit and return the log."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"consume_signals did not exit:\n{self.log()}")
        assert code == 0, self.log()
        return self.log()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


SUMMARIES = pytest.StashKey[list[str]]()


@pytest.fixture
def summarize(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print one line about a test's deliveries, and repeat it in the terminal summary."""
    lines = request.config.stash.setdefault(SUMMARIES, [])

    def add(line: str) -> None:
        print(line)
        lines.append(line)

    return add


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARIES, [])
    if lines:
        terminalreporter.section("deliveries under faults")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def prefix() -> str:
    """Unique to the test: the exchange name, and the start of every queue name."""
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rabbit(prefix: str) -> Iterator[Broker]:
    """The test's own broker connection on the test's exchange; deletes what the test made."""
    broker = Broker(prefix)
    yield broker
    broker.close()


@pytest.fixture
def service(prefix: str, rabbit: Broker, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Factory: ``service("orders", "producer", MAX_HOPS="3")`` -> a Service to run processes of."""
    made: list[Service] = []

    def make(name: str, role: str, **settings: str) -> Service:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "relay.settings",
            "BROADCASTER_BROKER_URL": BROKER_URL,
            "SERVICE_NAME": name,
            "EXCHANGE": prefix,
            "QUEUE": f"{prefix}.{name}",
            "ROLE": role,
            "RECORD_FILE": str(tmp_path / f"{name}.jsonl"),
            "DB_PATH": str(tmp_path / f"{name}.sqlite3"),
            **settings,
        }
        delays = settings.get("RETRY_DELAYS")
        retry_delays = tuple(float(d) for d in delays.split(",")) if delays else DEFAULT_RETRY_DELAYS
        made.append(Service(name, env, retry_delays))
        rabbit.queues.update(made[-1].queues)
        return made[-1]

    yield make
    for one in made:
        one.stop_all()

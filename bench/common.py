"""What every scenario shares: names of one run, broker set-up, pacing, percentiles, subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pika

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Raw pika talks to one node: the first of a cluster's list, where the library connects first.
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F").split(";")[0]
QUEUE_TYPE = os.environ.get("BENCH_QUEUE_TYPE", "classic")
RAW_KEY = "bench.raw"
RAW_LATENCY_KEY = "bench.raw.latency"
SINK_KEY = "bench.sink"
STARTED = "consume_signals: started"
T = TypeVar("T")


@dataclass(frozen=True)
class Names:
    """Broker objects and the PostgreSQL schema of one run; all deleted at its end."""

    run_id: str

    @property
    def exchange(self) -> str:
        return f"bench-{self.run_id}"

    @property
    def schema(self) -> str:
        return f"bench_{self.run_id}"

    def queue(self, scenario: str) -> str:
        """A queue of this run for `scenario`."""
        return f"bench-{self.run_id}-{scenario}"


def blocking_channel() -> tuple[pika.BlockingConnection, Any]:
    """A fresh blocking connection and channel to the bench broker."""
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    return conn, conn.channel()


def setup_broker(names: Names) -> dict[str, Any]:
    """Declare the run's exchange and its raw and sink queues; return the broker's server properties."""
    conn, channel = blocking_channel()
    try:
        channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
        server = dict(conn._impl.server_properties)
    finally:
        conn.close()
    bind_queue(names.queue("raw"), names.exchange, RAW_KEY)
    bind_queue(names.queue("raw-latency"), names.exchange, RAW_LATENCY_KEY)
    # The memory burst and the outbox relay publish here; the broker keeps only the newest.
    bind_queue(names.queue("sink"), names.exchange, SINK_KEY, {"x-max-length": 1000})
    return server


def _retry_once(action: Callable[[], T]) -> T:
    # Other people's fault-injection tests close every connection of the shared broker now
    # and then; a housekeeping step tries once more rather than end the run.
    try:
        return action()
    except pika.exceptions.AMQPConnectionError:
        time.sleep(1)
        return action()


def purge(*queues: str) -> None:
    """Empty `queues` (those that exist)."""

    def attempt() -> None:
        conn, channel = blocking_channel()
        try:
            for queue in queues:
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                    channel.queue_purge(queue)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()

    _retry_once(attempt)


def queue_depth(queue: str) -> int:
    """Messages ready in `queue`."""

    def attempt() -> int:
        conn, channel = blocking_channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()

    return _retry_once(attempt)


def wait_for_depth(queue: str, count: int, timeout: float = 30.0) -> int:
    """Wait until `queue` holds at least `count` messages; return the depth seen last."""
    deadline = time.monotonic() + timeout
    depth = queue_depth(queue)
    while depth < count and time.monotonic() < deadline:
        time.sleep(0.05)
        depth = queue_depth(queue)
    return depth


def declare_service(queue: str, events: list[str], *, ordered: bool = False) -> tuple[list[str], list[str]]:
    """Declare a consumer service's queues as its daemon would; return (queues, exchanges) to delete.

    Declared before the events are published, so that a daemon is timed on a full queue.
    """
    from django.conf import settings  # noqa: PLC0415 - the runner's Django settings

    from broadcaster.control import control_exchange, paused_marker  # noqa: PLC0415
    from broadcaster.settings import BroadcasterSettings  # noqa: PLC0415
    from broadcaster.topology import Partitions, Topology  # noqa: PLC0415

    conf = {**settings.BROADCASTER, "SERVICE_NAME": "bench-consumer", "QUEUE": queue}
    service_settings = BroadcasterSettings.model_validate(conf)
    service = Topology.for_settings(service_settings)
    partitions = Partitions.for_settings(service_settings)
    conn, channel = blocking_channel()
    try:
        service.declare(channel, [] if ordered else events)
        if ordered:
            partitions.declare(channel, events)
    finally:
        conn.close()
    queues = [service.queue, service.dead_letter_queue, *service.retry_queues]
    # The daemons declare their control exchange (and an operator's pause, its marker).
    exchanges = [service.requeue_exchange, control_exchange(service_settings), paused_marker(service_settings)]
    if ordered:
        queues += [p.queue for p in partitions.queues]
        exchanges.append(partitions.exchange)
    return queues, exchanges


def bind_queue(name: str, exchange: str, key: str, arguments: dict[str, Any] | None = None) -> str:
    """A plain durable queue of the run bound to `key`, for raw pika or FastStream."""
    conn, channel = blocking_channel()
    try:
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": QUEUE_TYPE, **(arguments or {})})
        channel.queue_bind(name, exchange, routing_key=key)
    finally:
        conn.close()
    return name


def delete(queues: list[str], exchanges: list[str]) -> None:
    """Delete queues and exchanges of the run, whatever state they are in; missing ones are fine."""

    def attempt() -> None:
        conn, channel = blocking_channel()
        try:
            for kind, names in (("queue", queues), ("exchange", exchanges)):
                for name in names:
                    if channel.is_closed:
                        channel = conn.channel()
                    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                        getattr(channel, f"{kind}_delete")(name)
        finally:
            conn.close()

    _retry_once(attempt)


def step(what: str, measure: Callable[[], T]) -> T | dict[str, str]:
    """Run one measurement and log it; a failure is recorded as {"error": ...}, not fatal to the run."""
    print(f"  {what} ...", end="", flush=True, file=sys.stderr)
    start = time.perf_counter()
    try:
        result = measure()
    except Exception as exc:
        traceback.print_exc()
        print(f"  {what}: failed", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}
    shown = f"{result:,.0f}/s" if isinstance(result, float) else "done"
    print(f" {shown} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return result


def paced(rate: float, count: int) -> Iterator[int]:
    """Yield 0..count-1, each at its slot of a fixed-rate schedule (no catching up in bursts)."""
    interval = 1.0 / rate
    start = time.perf_counter()
    for index in range(count):
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield index


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_env(run_id: str, **extra: str) -> dict[str, str]:
    """Environment of a bench subprocess: the run, the bench settings, then `extra`."""
    env = dict(os.environ)
    env.pop("BENCH_LOG_LEVEL", None)  # the runner keeps itself quiet; children log at INFO
    env.update(
        BENCH_RUN_ID=run_id,
        DJANGO_SETTINGS_MODULE="bench.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


class Child:
    """A bench subprocess whose stderr goes to a temporary file; always stopped on exit."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.log: IO[str] = tempfile.NamedTemporaryFile("w+", prefix="bench-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )

    def stderr(self) -> str:
        """Everything the child wrote to stderr so far."""
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Wait until the child logs `text`; raise if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.args)} exited: {self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.args)} did not log {text!r} within {timeout:g} s")
            time.sleep(0.05)

    def wait(self, timeout: float) -> str:
        """Wait for the child to exit by itself; return its stdout; raise on failure or timeout."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"{' '.join(self.args)} still running after {timeout:g} s") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"{' '.join(self.args)} failed ({self.process.returncode}): {self.stderr()[-2000:]}")
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()
        self.log.close()


@contextlib.contextmanager
def child(args: list[str], env: dict[str, str]) -> Iterator[Child]:
    """Run a bench subprocess for the block; it is stopped however the block ends."""
    running = Child(args, env)
    try:
        yield running
    finally:
        running.stop()


def run_to_end(args: list[str], env: dict[str, str], timeout: float) -> str:
    """Run a bench subprocess to its end; return its stdout (its stderr is printed if it fails)."""
    process = Child(args, env)
    try:
        return process.wait(timeout)
    except Exception:
        print(process.stderr()[-2000:], file=sys.stderr)
        raise
    finally:
        process.stop()


def in_child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a bench subprocess that prints one JSON object last; return that object."""
    result: dict[str, Any] = json.loads(run_to_end(args, env, timeout).strip().splitlines()[-1])
    return result

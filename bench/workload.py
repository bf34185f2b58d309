"""Receivers that do work: the daemon against raw pika doing the same per-event work, the
I/O-bound scaling of `--concurrency`, and ordered throughput over PARTITIONS queues.

The per-event work is the same everywhere: decode the JSON body (the daemon decodes and
validates it before the receiver runs) and append a line to a file. Each scenario has an
event and service queues of its own, declared before the queues are filled, so that a
daemon is timed on a full queue from its first event to its last.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pika
from django.dispatch import Signal

from bench.common import BROKER_URL, blocking_channel, child, child_env
from bench.events import BenchOrderPlaced, kwargs_for

WORK_EVENT = "bench.work"  # the daemon, raw pika and FastStream each consume a copy
SLEEP_EVENT = "bench.sleep"  # a receiver that waits 20 ms, as on an API
KEYED_EVENT = "bench.keyed"  # keyed by order_id: ordered and unordered subscriptions
KEYS = 100  # partition keys the keyed events are spread over
SLEEP = 0.020

work_sent, sleep_sent, keyed_sent = Signal(), Signal(), Signal()
work_remote = Signal()  # the consumer role's re-emitted event, whatever the scenario
DAEMON = ["-m", "django", "consume_signals"]


class Sink:
    """The per-event work's file: one line appended (and handed to the kernel) per event."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a")  # noqa: SIM115 - open for the life of the consumer
        self.lock = threading.Lock()

    def append(self, order_id: int) -> None:
        with self.lock:
            self.file.write(f"order {order_id} handled\n")
            self.file.flush()


class Clock:
    """Count and first / last time of handled events, from any thread; dumped as JSON."""

    def __init__(self) -> None:
        self.count = 0
        self.first_ns = self.last_ns = 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        now = time.time_ns()
        with self.lock:
            if self.count == 0:
                self.first_ns = now
            self.last_ns = now
            self.count += 1

    def rate(self) -> float:
        if self.count < 2:
            raise RuntimeError(f"only {self.count} event(s) handled")
        return (self.count - 1) / ((self.last_ns - self.first_ns) / 1e9)

    def dump(self, path: str) -> None:
        Path(path).write_text(json.dumps({"count": self.count, "first_ns": self.first_ns, "last_ns": self.last_ns}))


def register_producer() -> None:
    """Producer role: broadcast the workload's events (the keyed one keyed by order_id)."""
    import broadcaster  # noqa: PLC0415

    broadcaster.broadcast(work_sent, event=WORK_EVENT, schema=BenchOrderPlaced)
    broadcaster.broadcast(sleep_sent, event=SLEEP_EVENT, schema=BenchOrderPlaced)
    broadcaster.broadcast(keyed_sent, event=KEYED_EVENT, schema=BenchOrderPlaced, key="order_id")


def register_consumer(mode: str) -> None:
    """Consumer role with BENCH_WORKLOAD=work|sleep|ordered|unordered: subscribe and time it."""
    import broadcaster  # noqa: PLC0415

    event = {"work": WORK_EVENT, "sleep": SLEEP_EVENT}.get(mode, KEYED_EVENT)
    broadcaster.subscribe(event, schema=BenchOrderPlaced, signal=work_remote, ordered=mode == "ordered")
    clock = Clock()
    sink = Sink(os.environ["BENCH_SINK"]) if mode != "sleep" else None

    def receive(sender: object, order_id: int, **kwargs: Any) -> None:
        if sink is None:
            time.sleep(SLEEP)
        else:
            sink.append(order_id)
        clock.tick()

    work_remote.connect(receive, weak=False, dispatch_uid="bench.workload")
    atexit.register(clock.dump, os.environ["BENCH_OUT"])


def fill(signal: Signal, count: int) -> None:
    """Publish `count` events with the library (order ids 0..count-1) and wait for the confirms."""
    import broadcaster  # noqa: PLC0415
    from bench.library import Order  # noqa: PLC0415

    kwargs = kwargs_for(0)
    for index in range(count):
        kwargs["order_id"] = index % KEYS if signal is keyed_sent else index
        signal.send(sender=Order, **kwargs)
    broadcaster.flush(120)


def service_settings(run_id: str, queue: str) -> Any:
    """The settings a consume_signals of BENCH_QUEUE=`queue` runs with."""
    from django.conf import settings  # noqa: PLC0415

    from broadcaster.settings import BroadcasterSettings  # noqa: PLC0415

    conf = {**settings.BROADCASTER, "SERVICE_NAME": "bench-consumer", "QUEUE": queue, "PARTITIONS": 8}
    return BroadcasterSettings.model_validate(conf)


def declare(run_id: str, queue: str, event: str, *, ordered: bool = False) -> tuple[list[str], list[str]]:
    """Declare a service's queues as its daemon would; return (queues, exchanges) to delete."""
    from broadcaster.topology import Partitions, Topology  # noqa: PLC0415

    settings = service_settings(run_id, queue)
    service = Topology.for_settings(settings)
    partitions = Partitions.for_settings(settings)
    conn, channel = blocking_channel()
    try:
        service.declare(channel, [] if ordered else [event])
        if ordered:
            partitions.declare(channel, [event])
    finally:
        conn.close()
    queues = [service.queue, service.dead_letter_queue, *service.retry_queues]
    exchanges = [service.requeue_exchange]
    if ordered:
        queues += [p.queue for p in partitions.queues]
        exchanges.append(partitions.exchange)
    return queues, exchanges


def delete(queues: list[str], exchanges: list[str]) -> None:
    """Delete what `declare()` (or a scenario) declared; missing ones are fine."""
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


def daemon(run_id: str, queue: str, mode: str, count: int, concurrency: int = 1) -> float:
    """Events per second a consume_signals with receiver `mode` handles, first to last."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clock.json"
        env = child_env(
            run_id,
            BENCH_ROLE="consumer",
            BENCH_WORKLOAD=mode,
            BENCH_QUEUE=queue,
            BENCH_OUT=str(out),
            BENCH_SINK=str(Path(tmp) / "sink.txt"),
        )
        args = [*DAEMON, "--max-messages", str(count), "--concurrency", str(concurrency)]
        with child(args, env) as process:
            process.wait(timeout=240)
        seen = json.loads(out.read_text())
    if seen["count"] < count:
        raise RuntimeError(f"the daemon handled {seen['count']} of {count} events")
    return float((seen["count"] - 1) / ((seen["last_ns"] - seen["first_ns"]) / 1e9))


def raw_consume_work(queue: str, count: int, prefetch: int = 100) -> float:
    """Raw pika doing the receiver's work: json.loads, a line appended, one manual ack each."""
    clock = Clock()
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(str(Path(tmp) / "sink.txt"))

        def on_message(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
            payload = json.loads(body)
            sink.append(payload["order_id"])
            clock.tick()
            channel.basic_ack(method.delivery_tag)

        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=prefetch)
            channel.basic_consume(queue, on_message)
            deadline = time.monotonic() + 180
            while clock.count < count and time.monotonic() < deadline:
                conn.process_data_events(time_limit=1)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()
            sink.file.close()
    if clock.count < count:
        raise TimeoutError(f"raw consume saw {clock.count} of {count} messages")
    return clock.rate()


def raw_queue(run_id: str, exchange: str, name: str, event: str) -> str:
    """A plain durable queue of the run bound to `event`, for a raw or FastStream consumer."""
    conn, channel = blocking_channel()
    try:
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, exchange, routing_key=event)
    finally:
        conn.close()
    return name

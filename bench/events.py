"""The benchmark's events, the signals that carry them, and what a receiver records.

One payload (about 360 bytes of JSON with a nested model, decimals and a timestamp) goes
out under several event types, one per scenario, so that each scenario's queues receive
only its own events. A process plays the producer or the consumer role (BENCH_ROLE);
`register_producer` and `register_consumer` wire it, from `bench.apps`.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from django.dispatch import Signal
from pydantic import BaseModel, ConfigDict

EVENT = "bench.order_placed"  # publish, consume and latency scenarios
WORK_EVENT = "bench.work"  # the daemon, raw pika and FastStream each consume a copy
SLEEP_EVENT = "bench.sleep"  # a receiver that waits 20 ms, as on an API
KEYED_EVENT = "bench.keyed"  # keyed by order_id: ordered and unordered subscriptions
KEYS = 100  # partition keys the keyed events are spread over
SLEEP = 0.020
WARMUP_ORDER_ID = -1  # events sent before the measurement; receivers do not count them


class Customer(BaseModel):
    """Who placed the order; read from an ORM-like object (`from_attributes`)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str


class Line(BaseModel):
    """One order line."""

    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int
    unit_price: Decimal


class BenchOrderPlaced(BaseModel):
    """The payload; `sent_ns` is the producer's wall clock at send(), for latency."""

    schema_version: ClassVar[str] = "1.0"

    order_id: int
    customer: Customer
    lines: list[Line]
    total: Decimal
    currency: str
    placed_at: datetime
    sent_ns: int


order_placed = Signal()  # broadcast as EVENT (or BENCH_EVENT) by the producer role
order_placed_plain = Signal()  # the same kwargs, never broadcast: the caller-overhead baseline
work_sent, sleep_sent, keyed_sent = Signal(), Signal(), Signal()
remote = Signal()  # the consumer role's re-emitted event, whatever the scenario

# Consumer modes (BENCH_WORKLOAD): the event each subscribes to.
MODES = {
    "noop": EVENT,
    "latency": EVENT,
    "work": WORK_EVENT,
    "sleep": SLEEP_EVENT,
    "ordered": KEYED_EVENT,
    "unordered": KEYED_EVENT,
}


@dataclass
class _Row:
    """Stands in for ORM rows: the schema reads them by attribute."""

    id: int = 0
    email: str = ""
    name: str = ""
    sku: str = ""
    quantity: int = 0
    unit_price: Decimal = Decimal(0)


def kwargs_for(order_id: int) -> dict[str, Any]:
    """Signal kwargs of one order, as a view would pass them (plus one kwarg the schema ignores)."""
    lines = [
        _Row(sku="A-1002-XL", quantity=2, unit_price=Decimal("19.99")),
        _Row(sku="B-2087-M", quantity=1, unit_price=Decimal("49.50")),
        _Row(sku="C-3100-S", quantity=3, unit_price=Decimal("7.25")),
    ]
    return {
        "order_id": order_id,
        "customer": _Row(id=48213, email="jane.doe@example.com", name="Jane Doe"),
        "lines": lines,
        "total": Decimal("111.23"),
        "currency": "EUR",
        "placed_at": datetime(2025, 5, 17, 14, 3, 12, 123456, tzinfo=UTC),
        "sent_ns": time.time_ns(),
        "request": object(),
    }


def body_for(order_id: int) -> bytes:
    """The payload JSON the library publishes for `kwargs_for(order_id)`; raw pika sends the same."""
    payload = BenchOrderPlaced.model_validate(kwargs_for(order_id), from_attributes=True)
    return payload.model_dump_json().encode()


class Recorder:
    """What a receiver saw, from any thread: a count, first and last arrival, latencies if asked."""

    def __init__(self, latency: bool = False) -> None:
        self.latency = latency
        self.count = self.first_ns = self.last_ns = 0
        self.latencies_us: list[float] = []
        self.lock = threading.Lock()

    def seen(self, order_id: int, sent_ns: int = 0) -> None:
        """Record one event; warm-up events are not counted."""
        if order_id == WARMUP_ORDER_ID:
            return
        now = time.time_ns()
        with self.lock:
            self.first_ns = self.first_ns or now
            self.last_ns = now
            self.count += 1
            if self.latency:
                self.latencies_us.append((now - sent_ns) / 1000)

    def rate(self) -> float:
        """Events per second from the first to the last."""
        if self.count < 2:
            raise RuntimeError(f"only {self.count} event(s) handled")
        return (self.count - 1) / ((self.last_ns - self.first_ns) / 1e9)

    def dump(self, path: str) -> None:
        """Write what was recorded as JSON, for the runner."""
        fields = ("count", "first_ns", "last_ns", "latencies_us")
        Path(path).write_text(json.dumps({name: getattr(self, name) for name in fields}))


class Sink:
    """The receivers' work: one line appended to a file (and handed to the kernel) per event."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a")  # noqa: SIM115 - open for the life of the consumer
        self.lock = threading.Lock()

    def append(self, order_id: int) -> None:
        with self.lock:
            self.file.write(f"order {order_id} handled\n")
            self.file.flush()


def register_producer(event: str) -> None:
    """Producer role: broadcast `order_placed` as `event`, and the scenario events."""
    import broadcaster  # noqa: PLC0415 - the app registry must be ready first

    broadcaster.broadcast(order_placed, event=event, schema=BenchOrderPlaced)
    broadcaster.broadcast(work_sent, event=WORK_EVENT, schema=BenchOrderPlaced)
    broadcaster.broadcast(sleep_sent, event=SLEEP_EVENT, schema=BenchOrderPlaced)
    broadcaster.broadcast(keyed_sent, event=KEYED_EVENT, schema=BenchOrderPlaced, key="order_id")


def register_consumer(mode: str, out: str, sink: str | None) -> None:
    """Consumer role: subscribe to the event of `mode`, do its work, dump a Recorder to `out` at exit."""
    import broadcaster  # noqa: PLC0415

    broadcaster.subscribe(MODES[mode], schema=BenchOrderPlaced, signal=remote, ordered=mode == "ordered")
    recorder = Recorder(latency=mode == "latency")
    work = Sink(sink) if sink and mode in ("work", "ordered", "unordered") else None

    def receive(sender: object, order_id: int, sent_ns: int, **kwargs: Any) -> None:
        if mode == "sleep":
            time.sleep(SLEEP)
        elif work is not None:
            work.append(order_id)
        recorder.seen(order_id, sent_ns)

    remote.connect(receive, weak=False, dispatch_uid="bench.receive")
    atexit.register(recorder.dump, out)

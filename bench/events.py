"""The benchmark's event: about 300 bytes of JSON with a nested model, decimals and a timestamp."""

from __future__ import annotations

import atexit
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from django.dispatch import Signal
from pydantic import BaseModel, ConfigDict

EVENT = "bench.order_placed"
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


order_placed = Signal()  # broadcast as EVENT by the producer role
order_placed_plain = Signal()  # the same kwargs, never broadcast: the caller-overhead baseline
order_placed_remote = Signal()  # EVENT re-emitted in the consumer role


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
    kwargs = kwargs_for(order_id)
    payload = BenchOrderPlaced.model_validate(kwargs, from_attributes=True)
    return payload.model_dump_json().encode()


class Recorder:
    """What a receiver saw: a count, first and last arrival, and latencies when asked."""

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies_us: list[float] = []

    def seen(self, order_id: int, sent_ns: int) -> None:
        """Record one event; warm-up events are not counted."""
        if order_id == WARMUP_ORDER_ID:
            return
        now = time.time_ns()
        if self.count == 0:
            self.first_ns = now
        self.last_ns = now
        self.count += 1
        if self.latency:
            self.latencies_us.append((now - sent_ns) / 1000)

    def dump(self, path: str) -> None:
        """Write what was recorded as JSON for the runner."""
        data = {
            "count": self.count,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latencies_us": self.latencies_us,
        }
        with open(path, "w") as out:
            json.dump(data, out)


def connect_remote_receiver() -> None:
    """Consumer role: record every re-emitted event; dump to BENCH_OUT at exit."""
    recorder = Recorder(latency=os.environ.get("BENCH_RECEIVER") == "latency")

    def receive(sender: object, order_id: int, sent_ns: int, **kwargs: Any) -> None:
        recorder.seen(order_id, sent_ns)

    order_placed_remote.connect(receive, weak=False, dispatch_uid="bench.receive")
    if out := os.environ.get("BENCH_OUT"):
        atexit.register(recorder.dump, out)

"""Raw pika baselines: the ceiling the library is measured against, same message, same broker.

`python -m bench.rawpika latency-consumer|latency-producer ...` are the two processes of
the raw end-to-end latency baseline; the runner starts them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection

from bench.common import BROKER_URL, RAW_LATENCY_KEY, paced
from bench.events import WARMUP_ORDER_ID, Recorder, Sink

WARMUP = 50


def properties() -> pika.BasicProperties:
    """Properties as the library sends them (ce- headers, persistent), built once."""
    from broadcaster.envelope import Envelope, properties_for  # noqa: PLC0415 - Django-free module

    envelope = Envelope.new(source="bench-raw", type="bench.raw", subject="bench", schema_version="1.0")
    return properties_for(envelope)


def publish_no_confirms(exchange: str, key: str, body: bytes, count: int) -> float:
    """Messages per second handed to the socket by a BlockingChannel without confirms."""
    props = properties()
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        channel = conn.channel()
        start = time.perf_counter()
        for _ in range(count):
            channel.basic_publish(exchange, key, body, props)
        conn.process_data_events(0)
        elapsed = time.perf_counter() - start
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            conn.close()
    return count / elapsed


class _PipelinedPublisher:
    """Publishes `count` messages on a SelectConnection, at most `window` unconfirmed at once."""

    def __init__(self, exchange: str, key: str, body: bytes, count: int, window: int) -> None:
        self.exchange, self.key, self.body, self.count, self.window = exchange, key, body, count, window
        self.props = properties()
        self.sent = self.confirmed = 0
        self.start = self.end = 0.0
        self.channel: Any = None
        self.conn = SelectConnection(
            pika.URLParameters(BROKER_URL),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda _conn, err: self._fail(err),
        )
        self.error: object = None

    def run(self) -> float:
        self.conn.ioloop.call_later(120, lambda: self._fail("timed out"))
        self.conn.ioloop.start()
        if self.error is not None:
            raise RuntimeError(f"raw pipelined publish failed: {self.error}")
        return self.count / (self.end - self.start)

    def _fail(self, error: object) -> None:
        self.error = error
        self.conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: object) -> None:
        self.start = time.perf_counter()
        self._publish_more()

    def _publish_more(self) -> None:
        limit = min(self.count, self.confirmed + self.window)
        while self.sent < limit:
            self.channel.basic_publish(self.exchange, self.key, self.body, self.props)
            self.sent += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._fail("nacked")
            return
        self.confirmed = method.delivery_tag if method.multiple else self.confirmed + 1
        if self.confirmed >= self.count:
            self.end = time.perf_counter()
            self.conn.close()
            self.conn.ioloop.stop()
        else:
            self._publish_more()


def publish_confirms(exchange: str, key: str, body: bytes, count: int, window: int = 1000) -> float:
    """Confirmed messages per second with confirms pipelined on a SelectConnection."""
    return _PipelinedPublisher(exchange, key, body, count, window).run()


def consume(queue: str, count: int, *, work: bool = False, prefetch: int = 100) -> float:
    """Messages per second consumed with a manual ack each, first to last delivery.

    With `work`, each message gets the receivers' work first: json.loads, a line appended.
    """
    recorder = Recorder()
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(str(Path(tmp) / "sink.txt"))

        def on_message(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
            if work:
                sink.append(json.loads(body)["order_id"])
            recorder.seen(0)
            channel.basic_ack(method.delivery_tag)

        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=prefetch)
            channel.basic_consume(queue, on_message)
            deadline = time.monotonic() + 180
            while recorder.count < count and time.monotonic() < deadline:
                conn.process_data_events(time_limit=1)
        finally:
            with contextlib.suppress(pika.exceptions.AMQPError):
                conn.close()
            sink.file.close()
    if recorder.count < count:
        raise TimeoutError(f"raw consume saw {recorder.count} of {count} messages")
    return recorder.rate()


def latency_consumer(queue: str, count: int, out: str) -> None:
    """Consume `count` timed messages (after the warm-up ones), recording send -> receive."""
    recorder = Recorder(latency=True)
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))

    def on_message(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        payload = json.loads(body)
        recorder.seen(payload["order_id"], payload["sent_ns"])
        channel.basic_ack(method.delivery_tag)
        if recorder.count >= count:
            channel.stop_consuming()

    channel = conn.channel()
    channel.basic_qos(prefetch_count=100)
    channel.basic_consume(queue, on_message)
    print("raw consumer: started", file=sys.stderr, flush=True)
    channel.start_consuming()
    conn.close()
    recorder.dump(out)


def latency_producer(exchange: str, rate: float, count: int) -> None:
    """Publish `count` messages at `rate` per second, each stamped with its send time."""
    from bench.events import body_for  # noqa: PLC0415

    template = json.loads(body_for(0))
    props = properties()
    conn = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = conn.channel()
    for _ in range(WARMUP):
        channel.basic_publish(exchange, RAW_LATENCY_KEY, json.dumps({**template, "order_id": WARMUP_ORDER_ID}), props)
    conn.process_data_events(0.2)
    for index in paced(rate, count):
        body = json.dumps({**template, "order_id": index, "sent_ns": time.time_ns()})
        channel.basic_publish(exchange, RAW_LATENCY_KEY, body, props)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rawpika")
    commands = parser.add_subparsers(dest="command", required=True)
    consumer = commands.add_parser("latency-consumer")
    consumer.add_argument("--queue", required=True)
    consumer.add_argument("--count", type=int, required=True)
    consumer.add_argument("--out", required=True)
    producer = commands.add_parser("latency-producer")
    producer.add_argument("--exchange", required=True)
    producer.add_argument("--rate", type=float, required=True)
    producer.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.command == "latency-consumer":
        latency_consumer(args.queue, args.count, args.out)
    else:
        latency_producer(args.exchange, args.rate, args.count)


if __name__ == "__main__":
    main()

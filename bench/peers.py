"""FastStream (aio-pika) doing what the library does: the peer the library is compared with.

A bench-only dependency (`pip install -e '.[bench]'`, which `make bench` does). FastStream
talks only to the bench broker, publishes to the run's exchange and consumes queues of the
run's own names, which the runner declares and deletes. Its per-message log lines are
switched off (the daemon writes none either), which makes it faster, not slower.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BROKER_URL
from bench.events import BenchOrderPlaced, Recorder, Sink, kwargs_for

PREFETCH = 100  # as the daemon's


def available() -> bool:
    """Whether FastStream is installed (`make bench` installs the bench extra)."""
    try:
        import faststream.rabbit  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _broker() -> Any:
    from faststream.rabbit import Channel, RabbitBroker  # noqa: PLC0415

    quiet = logging.getLogger("bench.faststream")
    quiet.setLevel(logging.WARNING)
    channel = Channel(prefetch_count=PREFETCH, publisher_confirms=True)
    return RabbitBroker(BROKER_URL, default_channel=channel, logger=quiet, log_level=logging.DEBUG)


def publish_confirms(exchange: str, routing_key: str, count: int) -> float:
    """Messages per second: `count` gathered `broker.publish()` calls, each awaiting its confirm.

    Each publish is given the validated pydantic model (FastStream serializes it), persistent,
    as the library's send() is given the signal's kwargs.
    """
    return asyncio.run(_publish(exchange, routing_key, count))


async def _publish(exchange_name: str, routing_key: str, count: int) -> float:
    from faststream.rabbit import ExchangeType, RabbitExchange  # noqa: PLC0415

    broker = _broker()
    exchange = RabbitExchange(exchange_name, type=ExchangeType.TOPIC, durable=True, declare=False)
    await broker.start()
    try:
        kwargs = kwargs_for(1)
        model = BenchOrderPlaced.model_validate(kwargs, from_attributes=True)
        for _ in range(50):  # warm-up, as the library's publisher is connected and warm
            await broker.publish(model, exchange=exchange, routing_key=routing_key, persist=True)
        start = time.perf_counter()
        await asyncio.gather(
            *(broker.publish(model, exchange=exchange, routing_key=routing_key, persist=True) for _ in range(count))
        )
        return count / (time.perf_counter() - start)
    finally:
        await broker.stop()


def consume_work(queue: str, count: int) -> float:
    """Messages per second a pydantic-typed FastStream subscriber handles, first to last.

    The subscriber does the receiver's work (a line appended to a file); FastStream decodes
    and validates the body into `BenchOrderPlaced` and acks each message after it.
    """
    return asyncio.run(_consume(queue, count))


async def _consume(queue_name: str, count: int) -> float:
    from faststream.rabbit import RabbitQueue  # noqa: PLC0415

    broker = _broker()
    recorder = Recorder()
    done = asyncio.Event()
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(str(Path(tmp) / "sink.txt"))

        @broker.subscriber(RabbitQueue(queue_name, durable=True, declare=False))
        async def handle(event: BenchOrderPlaced) -> None:
            sink.append(event.order_id)
            recorder.seen(event.order_id)
            if recorder.count >= count:
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=180)
        finally:
            await broker.stop()
            sink.file.close()
    return recorder.rate()

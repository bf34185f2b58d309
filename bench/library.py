"""Library scenarios on the producer side: the caller, the publisher and the outbox relay.

The runner calls the in-process ones (`publish_throughput`, `caller_overhead`, `fill`) in
a process set up as the producer. `python -m bench.library produce|burst|outbox ...` are the
scenarios that need a process of their own; each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

from django.dispatch import Signal

from bench.common import median, paced, percentile, rss_bytes
from bench.events import KEYS, WARMUP_ORDER_ID, keyed_sent, kwargs_for, order_placed, order_placed_plain

WARMUP = 50


class Order:
    """The sender of the benchmark's signal, as a model class would be."""


def warm_up() -> None:
    """Connect the publisher and run the send() path once, outside any measurement."""
    import broadcaster  # noqa: PLC0415

    kwargs = kwargs_for(WARMUP_ORDER_ID)
    for _ in range(WARMUP):
        order_placed.send(sender=Order, **kwargs)
    broadcaster.flush(30)


def publish_throughput(count: int) -> float:
    """Events per second: `count` send() calls (outside a transaction), then flush()."""
    import broadcaster  # noqa: PLC0415

    kwargs = kwargs_for(1)
    send = order_placed.send
    start = time.perf_counter()
    for _ in range(count):
        send(sender=Order, **kwargs)
    broadcaster.flush(120)
    return count / (time.perf_counter() - start)


def caller_overhead(samples: int, pause: float = 0.0002) -> dict[str, Any]:
    """Microseconds one send() costs the caller, with the broadcast and without.

    Calls alternate between the broadcast signal and the same kwargs on a signal nobody
    broadcasts; a short sleep after each pair lets the I/O thread publish in between, as
    it would between requests, so the figure is the caller's own cost, not GIL queueing.
    """
    import broadcaster  # noqa: PLC0415

    kwargs = kwargs_for(1)
    clock = time.perf_counter_ns
    with_broadcast: list[float] = []
    without: list[float] = []
    for _ in range(samples):
        start = clock()
        order_placed_plain.send(sender=Order, **kwargs)
        middle = clock()
        order_placed.send(sender=Order, **kwargs)
        end = clock()
        without.append((middle - start) / 1000)
        with_broadcast.append((end - middle) / 1000)
        time.sleep(pause)
    broadcaster.flush(60)
    return {
        "overhead_p50_us": median(with_broadcast) - median(without),
        "overhead_p99_us": percentile(with_broadcast, 99) - percentile(without, 99),
        "plain_p50_us": median(without),
        "plain_p99_us": percentile(without, 99),
        "samples": samples,
    }


def fill(signal: Signal, count: int) -> None:
    """Publish `count` events of a scenario signal (order ids 0..count-1) and wait for the confirms."""
    import broadcaster  # noqa: PLC0415

    kwargs = kwargs_for(0)
    for index in range(count):
        kwargs["order_id"] = index % KEYS if signal is keyed_sent else index
        signal.send(sender=Order, **kwargs)
    broadcaster.flush(120)


def produce(rate: float, count: int) -> dict[str, Any]:
    """The e2e producer: `count` events at `rate` per second, each stamped at send()."""
    import broadcaster  # noqa: PLC0415

    warm_up()
    kwargs = kwargs_for(0)
    for index in paced(rate, count):
        kwargs["order_id"] = index
        kwargs["sent_ns"] = time.time_ns()
        order_placed.send(sender=Order, **kwargs)
    broadcaster.flush(60)
    return {"sent": count}


def burst(count: int) -> dict[str, Any]:
    """Send `count` events as fast as possible; report the buffer's high-water mark and RSS."""
    import broadcaster  # noqa: PLC0415
    from broadcaster.settings import get_settings  # noqa: PLC0415
    from broadcaster.transport import get_publisher  # noqa: PLC0415

    warm_up()
    publisher = get_publisher()
    kwargs = kwargs_for(1)
    rss_before = rss_bytes()
    peak_pending = 0
    start = time.perf_counter()
    for index in range(count):
        order_placed.send(sender=Order, **kwargs)
        if index % 100 == 0:
            peak_pending = max(peak_pending, publisher.pending)
    sent = time.perf_counter() - start
    broadcaster.flush(120)
    elapsed = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "count": count,
        "max_buffer": get_settings().max_buffer,
        "peak_pending": peak_pending,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak_rss / 2**20,
        "rss_after_mb": rss_bytes() / 2**20,
        "rss_growth_mb": (peak_rss - rss_before) / 2**20,
        "send_seconds": sent,
        "events_per_s": count / elapsed,
    }


def outbox(count: int, per_transaction: int) -> dict[str, Any]:
    """Outbox mode: write `count` events with send(), then time `relay_outbox --once` alone."""
    from django.conf import settings  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connection, transaction  # noqa: PLC0415

    from broadcaster import outbox as outbox_module  # noqa: PLC0415
    from broadcaster.models import OutboxEvent  # noqa: PLC0415

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS bench_{settings.RUN_ID}")
    call_command("migrate", verbosity=0)
    # The web process relays after each commit; stop that, so that the relay is timed alone.
    outbox_module.wake = lambda *args, **kwargs: None
    kwargs = kwargs_for(1)
    start = time.perf_counter()
    for _ in range(count // per_transaction):
        with transaction.atomic():
            for _ in range(per_transaction):
                order_placed.send(sender=Order, **kwargs)
    written = time.perf_counter() - start
    pending = OutboxEvent.objects.filter(published_at__isnull=True).count()
    start = time.perf_counter()
    call_command("relay_outbox", "--once", stdout=sys.stderr)
    relayed = time.perf_counter() - start
    left = OutboxEvent.objects.filter(published_at__isnull=True).count()
    return {
        "rows": pending,
        "published": pending - left,
        "write_events_per_s": pending / written,
        "relay_events_per_s": (pending - left) / relayed,
        "per_transaction": per_transaction,
    }


def main() -> None:
    import django  # noqa: PLC0415

    django.setup()
    parser = argparse.ArgumentParser(prog="python -m bench.library")
    commands = parser.add_subparsers(dest="command", required=True)
    producer = commands.add_parser("produce")
    producer.add_argument("--rate", type=float, required=True)
    producer.add_argument("--count", type=int, required=True)
    commands.add_parser("burst").add_argument("--count", type=int, required=True)
    relay = commands.add_parser("outbox")
    relay.add_argument("--count", type=int, required=True)
    relay.add_argument("--per-transaction", type=int, default=100)
    args = parser.parse_args()
    if args.command == "produce":
        result = produce(args.rate, args.count)
    elif args.command == "burst":
        result = burst(args.count)
    else:
        result = outbox(args.count, args.per_transaction)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

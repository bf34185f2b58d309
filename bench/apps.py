"""The bench as a Django app: wires the producer or the consumer side by BENCH_ROLE."""

from __future__ import annotations

import os

from django.apps import AppConfig


class BenchConfig(AppConfig):
    """`"bench"` in INSTALLED_APPS of bench.settings."""

    name = "bench"

    def ready(self) -> None:
        import broadcaster  # noqa: PLC0415 - the app registry must be ready first
        from bench import events, workload  # noqa: PLC0415

        event = os.environ.get("BENCH_EVENT", events.EVENT)
        consumer = os.environ.get("BENCH_ROLE", "producer") == "consumer"
        if consumer and (mode := os.environ.get("BENCH_WORKLOAD")):
            workload.register_consumer(mode)  # a daemon of bench.workload's scenarios
        elif consumer:
            broadcaster.subscribe(event, schema=events.BenchOrderPlaced, signal=events.order_placed_remote)
            events.connect_remote_receiver()
            if trace := os.environ.get("BENCH_TRACE"):
                from bench import stalls  # noqa: PLC0415

                stalls.trace_consumer(trace)  # the traced latency run: stamps per delivery
        else:
            broadcaster.broadcast(events.order_placed, event=event, schema=events.BenchOrderPlaced)
            workload.register_producer()

"""The bench as a Django app: wires the producer or the consumer side by BENCH_ROLE."""

from __future__ import annotations

import os

from django.apps import AppConfig


class BenchConfig(AppConfig):
    """`"bench"` in INSTALLED_APPS of bench.settings."""

    name = "bench"

    def ready(self) -> None:
        from bench import events  # noqa: PLC0415 - the app registry must be ready first

        if os.environ.get("BENCH_ROLE", "producer") == "consumer":
            mode = os.environ.get("BENCH_WORKLOAD", "noop")
            events.register_consumer(mode, os.environ["BENCH_OUT"], os.environ.get("BENCH_SINK"))
        else:
            events.register_producer(os.environ.get("BENCH_EVENT", events.EVENT))

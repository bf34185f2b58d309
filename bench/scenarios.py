"""Scenarios that span processes: a `consume_signals` daemon's throughput, end-to-end latency."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import STARTED, child, child_env, median, percentile, run_to_end
from bench.library import WARMUP as LIBRARY_WARMUP

DAEMON = ["-m", "django", "consume_signals"]


def daemon(run_id: str, mode: str, count: int, queue: str, concurrency: int = 1) -> float:
    """Events per second a consume_signals over a filled `queue` handles, first to last.

    `mode` is the receiver's (bench.events.MODES): noop, work, sleep, ordered or unordered.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recorded.json"
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


def latency(values: list[float]) -> dict[str, Any]:
    """p50, p99 and max (ms) of latencies given in microseconds."""
    return {
        "p50_ms": median(values) / 1000,
        "p99_ms": percentile(values, 99) / 1000,
        "max_ms": max(values, default=float("nan")) / 1000,
        "count": len(values),
    }


def library_latency(run_id: str, queue: str, rate: float, count: int) -> dict[str, Any]:
    """send() in a producer process -> receiver in a consume_signals process, at a fixed rate."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "latency.json"
        env = child_env(run_id, BENCH_ROLE="consumer", BENCH_WORKLOAD="latency", BENCH_QUEUE=queue, BENCH_OUT=str(out))
        with child([*DAEMON, "--max-messages", str(count + LIBRARY_WARMUP)], env) as process:
            process.wait_for_line(STARTED, timeout=60)
            run_to_end(
                ["-m", "bench.library", "produce", "--rate", str(rate), "--count", str(count)],
                child_env(run_id, BENCH_ROLE="producer"),
                timeout=count / rate + 60,
            )
            process.wait(timeout=30)
        return latency(json.loads(out.read_text())["latencies_us"])


def raw_latency(run_id: str, exchange: str, queue: str, rate: float, count: int) -> dict[str, Any]:
    """The same at the same rate with a raw pika producer and a raw pika consumer process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw-latency.json"
        env = child_env(run_id)
        args = ["-m", "bench.rawpika", "latency-consumer", "--queue", queue, "--count", str(count), "--out", str(out)]
        with child(args, env) as consumer:
            consumer.wait_for_line("raw consumer: started", timeout=30)
            producer = ["-m", "bench.rawpika", "latency-producer", "--exchange", exchange]
            run_to_end([*producer, "--rate", str(rate), "--count", str(count)], env, timeout=count / rate + 60)
            consumer.wait(timeout=30)
        return latency(json.loads(out.read_text())["latencies_us"])

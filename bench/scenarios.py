"""Scenarios that span processes: the daemon's throughput and end-to-end latency."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import STARTED, Child, child, child_env, median, percentile
from bench.library import WARMUP as LIBRARY_WARMUP

DAEMON = ["-m", "django", "consume_signals"]


def _recorded(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def daemon_throughput(run_id: str, count: int) -> float:
    """Events per second `consume_signals` re-emits to a no-op receiver, first to last."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "daemon.json"
        env = child_env(run_id, BENCH_ROLE="consumer", BENCH_RECEIVER="noop", BENCH_OUT=str(out))
        with child([*DAEMON, "--max-messages", str(count)], env) as daemon:
            daemon.wait(timeout=180)
        seen = _recorded(out)
    if seen["count"] < count:
        raise RuntimeError(f"the daemon re-emitted {seen['count']} of {count} events")
    return (seen["count"] - 1) / ((seen["last_ns"] - seen["first_ns"]) / 1e9)


def latency(values: list[float]) -> dict[str, Any]:
    """p50 and p99 (ms) of latencies given in microseconds, and the values themselves."""
    return {
        "p50_ms": median(values) / 1000,
        "p99_ms": percentile(values, 99) / 1000,
        "max_ms": max(values, default=float("nan")) / 1000,
        "count": len(values),
        "latencies_us": values,
    }


def library_latency(run_id: str, rate: float, count: int) -> dict[str, Any]:
    """send() in a producer process -> receiver in a consume_signals process, at a fixed rate."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "latency.json"
        env = child_env(run_id, BENCH_ROLE="consumer", BENCH_RECEIVER="latency", BENCH_OUT=str(out))
        with child([*DAEMON, "--max-messages", str(count + LIBRARY_WARMUP)], env) as daemon:
            daemon.wait_for_line(STARTED, timeout=60)
            _run_to_end(
                ["-m", "bench.library", "produce", "--rate", str(rate), "--count", str(count)],
                child_env(run_id, BENCH_ROLE="producer"),
                timeout=count / rate + 60,
            )
            daemon.wait(timeout=30)
        return latency(_recorded(out)["latencies_us"])


def raw_latency(run_id: str, exchange: str, queue: str, rate: float, count: int) -> dict[str, Any]:
    """The same at the same rate with a raw pika producer and a raw pika consumer process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw-latency.json"
        env = child_env(run_id)
        args = ["-m", "bench.rawpika", "latency-consumer", "--queue", queue, "--count", str(count), "--out", str(out)]
        with child(args, env) as consumer:
            consumer.wait_for_line("raw consumer: started", timeout=30)
            producer = ["-m", "bench.rawpika", "latency-producer", "--exchange", exchange]
            _run_to_end([*producer, "--rate", str(rate), "--count", str(count)], env, timeout=count / rate + 60)
            consumer.wait(timeout=30)
        return latency(_recorded(out)["latencies_us"])


def in_child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a `python -m bench.library` scenario in its own process; return its JSON line."""
    out = _run_to_end(args, env, timeout)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _run_to_end(args: list[str], env: dict[str, str], timeout: float) -> str:
    process = Child(args, env)
    try:
        return process.wait(timeout)
    except Exception:
        print(process.stderr()[-2000:], file=sys.stderr)
        raise
    finally:
        process.stop()

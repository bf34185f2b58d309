"""Where end-to-end stalls come from: per-event stamps at send, publish, delivery and receipt.

The traced latency run is the library's latency scenario with bench-only probes:

- producer: `send()` time (in the payload), the time the publisher's I/O thread starts
  writing each batch (`Publisher._publish_all` wrapped; events leave in send order), and
  every garbage collection with its duration (`gc.callbacks`);
- daemon: the time the connection's thread is handed each delivery (`Consumer._on_message`
  wrapped), the time a receiver runs, and its garbage collections;
- machine: a separate process sleeping 1 ms in a loop and recording every oversleep, which
  shows when no core was free for a runnable process.

Each slow event's delay is split into send -> publish (the producer process: its I/O
thread, the GIL, GC), publish -> deliver (the broker, the loopback, the daemon's reading)
and deliver -> receive (the daemon's worker thread), and set beside the GC pauses and the
machine's oversleeps around it. The probes cost about a microsecond per event.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import STARTED, child, child_env, median, percentile
from bench.events import WARMUP_ORDER_ID

SLOW_MS = 10.0  # an event slower than this end to end is looked into
WARMUP = 50  # bench.library.WARMUP: events published before the measured ones


class _GcLog:
    """Every collection of this process: (start ns, duration us, generation)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, int]] = []
        self._start = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.time_ns()
        if phase == "start":
            self._start = now
        else:
            self.pauses.append((self._start, (now - self._start) / 1000, int(info["generation"])))


def _order_id(body: bytes) -> int:
    """The order id of a bench body (`{"order_id":N,...`), read without decoding the rest."""
    return int(body[12 : body.index(b",", 12)]) if body.startswith(b'{"order_id":') else WARMUP_ORDER_ID


def _trace_publisher(published: list[tuple[int, int]]) -> None:
    from broadcaster.publisher import Publisher  # noqa: PLC0415

    original = Publisher._publish_all

    def publish_all(self: Any, link: Any, batch: list[Any]) -> bool:
        now = time.time_ns()
        published.extend((_order_id(message.body), now) for message in batch)
        return bool(original(self, link, batch))

    Publisher._publish_all = publish_all  # type: ignore[method-assign]


def trace_consumer(path: str) -> None:
    """In a daemon (BENCH_TRACE=path): stamp every delivery and receipt; dump at exit."""
    from bench.events import order_placed_remote  # noqa: PLC0415
    from broadcaster.consumer import Consumer  # noqa: PLC0415

    gc_log = _GcLog()
    delivered: list[tuple[int, int]] = []
    received: list[tuple[int, int, int]] = []
    original = Consumer._on_message

    def on_message(self: Any, *args: Any) -> None:
        delivered.append((_order_id(args[-1]), time.time_ns()))  # args end with the body
        original(self, *args)

    def receive(sender: object, order_id: int, sent_ns: int, **kwargs: Any) -> None:
        received.append((order_id, sent_ns, time.time_ns()))

    Consumer._on_message = on_message  # type: ignore[method-assign]
    order_placed_remote.connect(receive, weak=False, dispatch_uid="bench.stalls")
    dump = {"delivered": delivered, "received": received, "gc": gc_log.pauses}
    atexit.register(lambda: Path(path).write_text(json.dumps(dump)))


def produce(rate: float, count: int, out: str) -> dict[str, Any]:
    """`bench.library.produce` with the publisher's batches and the GC pauses stamped."""
    from bench import library  # noqa: PLC0415

    gc_log = _GcLog()
    published: list[tuple[int, int]] = []
    _trace_publisher(published)
    result = library.produce(rate, count)
    Path(out).write_text(json.dumps({"published": published, "gc": gc_log.pauses}))
    return result


def probe(seconds: float, out: str, tick: float = 0.001) -> None:
    """Sleep `tick` in a loop for `seconds`; record every oversleep over 2 ms (ns, ms late)."""
    late: list[tuple[int, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        before = time.perf_counter_ns()
        time.sleep(tick)
        over = (time.perf_counter_ns() - before) / 1e6 - tick * 1000
        if over > 2:
            late.append((time.time_ns(), over))
    Path(out).write_text(json.dumps(late))


def library_latency(run_id: str, rate: float, count: int) -> dict[str, Any]:
    """scenarios.library_latency with the probes: latencies plus the stall analysis."""
    from bench.scenarios import DAEMON, _recorded, _run_to_end, latency  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: str(Path(tmp) / f"{name}.json") for name in ("latency", "daemon", "producer", "probe")}
        env = child_env(run_id, BENCH_ROLE="consumer", BENCH_RECEIVER="latency", BENCH_OUT=paths["latency"]) | {
            "BENCH_TRACE": paths["daemon"]
        }
        seconds = count / rate
        with child([*DAEMON, "--max-messages", str(count + WARMUP)], env) as daemon:
            daemon.wait_for_line(STARTED, timeout=60)
            probe_args = ["-m", "bench.stalls", "probe", "--seconds", str(seconds + 5), "--out", paths["probe"]]
            with child(probe_args, child_env(run_id)) as machine:
                producer = ["-m", "bench.stalls", "produce", "--rate", str(rate), "--count", str(count)]
                _run_to_end(
                    [*producer, "--out", paths["producer"]],
                    child_env(run_id, BENCH_ROLE="producer"),
                    timeout=seconds + 60,
                )
                daemon.wait(timeout=30)
                machine.wait(timeout=30)
            result = latency(_recorded(Path(paths["latency"]))["latencies_us"])
        traces = {name: json.loads(Path(paths[name]).read_text()) for name in ("daemon", "producer", "probe")}
    result["stalls"] = analyse(traces["producer"], traces["daemon"], traces["probe"])
    return result


def _near(pauses: list[tuple[int, float]], start: int, end: int) -> float:
    """The longest pause (ms) overlapping [start, end] ns; pauses are (start ns, ms)."""
    return max((ms for at, ms in pauses if at <= end and at + ms * 1e6 >= start), default=0.0)


def analyse(producer: dict[str, Any], daemon: dict[str, Any], late: list[list[float]]) -> dict[str, Any]:
    """Split each slow event's delay into its stages and set it beside GC and the machine."""
    # order id -> its first stamp (a republished or redelivered event keeps its first)
    published = dict(reversed(producer["published"]))
    delivered = dict(reversed(daemon["delivered"]))
    received = [row for row in daemon["received"] if row[0] >= 0]  # (order id, sent ns, received ns)
    stages: dict[str, list[float]] = {"send_to_publish": [], "publish_to_deliver": [], "deliver_to_receive": []}
    slow = []
    producer_gc = [(at, us / 1000) for at, us, _ in producer["gc"]]
    daemon_gc = [(at, us / 1000) for at, us, _ in daemon["gc"]]
    machine = [(int(at - ms * 1e6), ms) for at, ms in late]
    for order_id, send_ns, receive_ns in received:
        if order_id not in published or order_id not in delivered:
            continue
        publish_ns, deliver_ns = published[order_id], delivered[order_id]
        gaps = (publish_ns - send_ns, deliver_ns - publish_ns, receive_ns - deliver_ns)
        for key, gap in zip(stages, gaps, strict=True):
            stages[key].append(gap / 1e6)
        total = (receive_ns - send_ns) / 1e6
        if total > SLOW_MS:
            slow.append(
                {
                    "order_id": order_id,
                    "total_ms": total,
                    **{key: gap / 1e6 for key, gap in zip(stages, gaps, strict=True)},
                    "producer_gc_ms": _near(producer_gc, send_ns, receive_ns),
                    "daemon_gc_ms": _near(daemon_gc, send_ns, receive_ns),
                    "machine_late_ms": _near(machine, send_ns, receive_ns),
                }
            )
    return {
        "slow_ms": SLOW_MS,
        "stages": {
            key: {"p50_ms": median(v), "p99_ms": percentile(v, 99), "max_ms": max(v, default=0.0)}
            for key, v in stages.items()
        },
        "summary": _summary(slow),
        "slow_events": slow[:500],
        "producer_gc": _gc_summary(producer["gc"]),
        "daemon_gc": _gc_summary(daemon["gc"]),
        "machine_oversleeps": {
            "count": len(late),
            "over_10ms": sum(1 for _, ms in late if ms > 10),
            "max_ms": max((ms for _, ms in late), default=0.0),
        },
    }


def _summary(slow: list[dict[str, Any]]) -> dict[str, Any]:
    """How many slow events each stage dominated, and how many had a GC or the machine near."""
    stages = ("send_to_publish", "publish_to_deliver", "deliver_to_receive")
    dominant = [max(stages, key=lambda stage: event[stage]) for event in slow]
    return {
        "slow_events": len(slow),
        "dominated_by": {stage: dominant.count(stage) for stage in stages},
        "machine_oversleep_over_5ms": sum(event["machine_late_ms"] > 5 for event in slow),
        "gc_over_5ms": sum(max(event["producer_gc_ms"], event["daemon_gc_ms"]) > 5 for event in slow),
        "max_ms": max((event["total_ms"] for event in slow), default=0.0),
    }


def _gc_summary(pauses: list[list[float]]) -> dict[str, Any]:
    durations = [us / 1000 for _, us, _ in pauses]
    return {"count": len(durations), "max_ms": max(durations, default=0.0), "over_5ms": sum(d > 5 for d in durations)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stalls")
    commands = parser.add_subparsers(dest="command", required=True)
    producer = commands.add_parser("produce")
    producer.add_argument("--rate", type=float, required=True)
    producer.add_argument("--count", type=int, required=True)
    producer.add_argument("--out", required=True)
    machine = commands.add_parser("probe")
    machine.add_argument("--seconds", type=float, required=True)
    machine.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "probe":
        probe(args.seconds, args.out)
        return
    import django  # noqa: PLC0415

    django.setup()
    print(json.dumps(produce(args.rate, args.count, args.out)))


if __name__ == "__main__":
    main()

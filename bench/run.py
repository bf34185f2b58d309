"""The runner of `make bench`: raw pika baselines and library scenarios, interleaved, in one run.

Throughput scenarios run in rounds, raw pika and the library alternating which goes first,
and each library figure is divided by the raw pika figure of its own round; the table
shows the medians. Everything the run declares is deleted at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from bench import cluster, common, comparisons, library, rawpika, report, scenarios, stalls
from bench.common import Names
from bench.events import EVENT, body_for


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="events per throughput measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the throughput scenarios")
    parser.add_argument("--samples", type=int, default=10_000, help="send() calls timed for the caller overhead")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second of the latency scenario")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the latency scenario")
    parser.add_argument("--burst", type=int, default=100_000, help="events of the memory burst")
    parser.add_argument("--outbox-count", type=int, default=20_000, help="outbox rows relayed")
    parser.add_argument("--work-rounds", type=int, default=3, help="rounds of daemon / raw pika / FastStream work")
    parser.add_argument("--quick", action="store_true", help="small counts, to try the bench (writes quick.*)")
    args = parser.parse_args()
    if args.quick:
        args.work_rounds = 1
        args.count, args.rounds, args.samples, args.seconds, args.burst, args.outbox_count = (
            2000,
            1,
            1000,
            2,
            5000,
            2000,
        )
    return args


def main() -> None:
    args = parse_args()
    run_id = uuid.uuid4().hex[:10]
    os.environ.update(common.child_env(run_id, BENCH_ROLE="producer", BENCH_LOG_LEVEL="WARNING"))
    import django  # noqa: PLC0415 - the environment above must be in place first

    django.setup()
    names = Names(run_id)
    started = time.time()
    print(f"bench run {run_id}: exchange {names.exchange}", file=sys.stderr)
    topology = _consumer_topology(names)
    queues = _queues(names, topology)
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "quick"}}
    try:
        server = common.setup_broker(names)
        _declare(topology)
        _run_all(args, names, results)
    finally:
        _clean_up(names, queues)
    results["seconds"] = time.time() - started
    # Only a full run is "latest" and goes into bench/README.md.
    name = "quick" if args.quick else "latest"
    report.write(results, report.machine(server), name=name)


def _run_all(args: argparse.Namespace, names: Names, results: dict[str, Any]) -> None:
    library.warm_up()
    common.purge(names.consumer_queue)
    results["rounds"] = [_round(args.count, names, raw_first=index % 2 == 0) for index in range(args.rounds)]
    results["overhead"] = _step("caller overhead", lambda: library.caller_overhead(args.samples))
    results["overhead_apart"] = _step(
        "caller overhead, I/O thread on another core", lambda: library.caller_overhead_apart(args.samples)
    )
    common.purge(names.consumer_queue)
    count = int(args.rate * args.seconds)
    results["latency_raw"] = _step(
        "e2e latency, raw pika",
        lambda: scenarios.raw_latency(names.run_id, names.exchange, names.raw_latency_queue, args.rate, count),
    )
    results["latency_library"] = _step(
        "e2e latency, library (traced)", lambda: stalls.library_latency(names.run_id, args.rate, count)
    )
    results["workload"] = _step(
        "receivers that work (daemon, raw pika, FastStream)",
        lambda: comparisons.work_rounds(names, args.count, args.work_rounds),
    )
    results["scaling"] = _step("I/O-bound scaling", lambda: comparisons.scaling(names))
    results["ordered"] = _step("ordered throughput", lambda: comparisons.ordered(names, args.count))
    results["burst"] = _step("memory burst", lambda: _burst(names, args.burst))
    results["outbox"] = _step("outbox relay", lambda: _outbox(names, args.outbox_count))
    # Last: starting the three-node cluster loads the machine for half a minute.
    rounds = min(args.rounds, 3)
    results["cluster"] = _step("three-node cluster, quorum queues", lambda: cluster.measure(args.count, rounds))


def _round(count: int, names: Names, *, raw_first: bool) -> dict[str, Any]:
    """One round of every throughput scenario; raw first or library first."""
    body = body_for(1)
    figures: dict[str, Any] = {}

    def raw() -> None:
        figures["raw_publish"] = _step(
            "raw publish, no confirms", lambda: rawpika.publish_no_confirms(names.exchange, common.RAW_KEY, body, count)
        )
        common.wait_for_depth(names.raw_queue, count)
        common.purge(names.raw_queue)
        figures["raw_confirms"] = _step(
            "raw publish, pipelined confirms",
            lambda: rawpika.publish_confirms(names.exchange, common.RAW_KEY, body, count),
        )
        figures["raw_consume"] = _step("raw consume, manual acks", lambda: rawpika.consume(names.raw_queue, count))
        common.purge(names.raw_queue)

    def lib() -> None:
        figures["library_publish"] = _step("library send() + flush()", lambda: library.publish_throughput(count))
        figures["daemon"] = _step("library daemon", lambda: scenarios.daemon_throughput(names.run_id, count))
        common.purge(names.consumer_queue)

    for part in (raw, lib) if raw_first else (lib, raw):
        try:
            part()
        except Exception as exc:  # a broker hiccup spoils this round, not the run
            traceback.print_exc()
            figures[f"{part.__name__}_error"] = f"{type(exc).__name__}: {exc}"
    return figures


def _burst(names: Names, count: int) -> dict[str, Any]:
    env = common.child_env(names.run_id, BENCH_ROLE="producer", BENCH_EVENT=common.SINK_KEY)
    return scenarios.in_child(["-m", "bench.library", "burst", "--count", str(count)], env, timeout=240)


def _outbox(names: Names, count: int) -> dict[str, Any]:
    if importlib.util.find_spec("broadcaster.outbox") is None:
        return {"available": False, "reason": "broadcaster.outbox cannot be imported"}
    env = common.child_env(
        names.run_id, BENCH_ROLE="producer", BENCH_EVENT=common.SINK_KEY, BENCH_PUBLISH_MODE="outbox"
    )
    args = ["-m", "bench.library", "outbox", "--count", str(count)]
    return {"available": True, **scenarios.in_child(args, env, timeout=240)}


def _step(what: str, measure: Callable[[], Any]) -> Any:
    """Run one measurement and log it; a failure is recorded, not fatal to the run."""
    print(f"  {what} ...", end="", flush=True, file=sys.stderr)
    start = time.perf_counter()
    try:
        result = measure()
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    shown = f"{result:,.0f}" if isinstance(result, float) else "done"
    print(f" {shown} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return result


def _consumer_topology(names: Names) -> Any:
    """The consumer service's topology, as consume_signals in the consumer role declares it."""
    from django.conf import settings  # noqa: PLC0415

    from broadcaster.settings import BroadcasterSettings  # noqa: PLC0415
    from broadcaster.topology import Topology  # noqa: PLC0415

    consumer = {**settings.BROADCASTER, "SERVICE_NAME": "bench-consumer", "QUEUE": names.consumer_queue}
    return Topology.for_settings(BroadcasterSettings.model_validate(consumer))


def _queues(names: Names, topology: Any) -> list[str]:
    """Every queue a run declares, for the clean-up."""
    queues = [names.raw_queue, names.raw_latency_queue, names.sink_queue, topology.queue]
    return [*queues, topology.dead_letter_queue, *topology.retry_queues]


def _declare(topology: Any) -> None:
    """Declare the consumer's queues now, so that the publish scenarios fill them before it runs."""
    conn, channel = common.blocking_channel()
    try:
        topology.declare(channel, [EVENT])
    finally:
        conn.close()


def _clean_up(names: Names, queues: list[str]) -> None:
    from django.db import connection  # noqa: PLC0415

    from broadcaster.transport import reset_publisher  # noqa: PLC0415

    try:
        reset_publisher(timeout=10)
    except Exception as exc:
        print(f"bench: publisher did not close cleanly: {exc}", file=sys.stderr)
    try:
        common.teardown(names, queues)
    except Exception as exc:
        print(f"bench: could not delete {names.exchange} and its queues: {exc}", file=sys.stderr)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {names.schema} CASCADE")
    except Exception as exc:
        print(f"bench: could not drop schema {names.schema}: {exc}", file=sys.stderr)
    finally:
        connection.close()

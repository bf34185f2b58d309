"""The runner of `make bench`: raw pika baselines and library scenarios, interleaved, in one run.

Throughput scenarios run in rounds, raw pika and the library alternating which goes first,
and each library figure is divided by the baseline of its own round; the table shows the
medians. Everything the run declares is deleted at the end, whatever happens.
`--quick` runs every scenario but the cluster's with tiny counts: a smoke test of the
bench itself (tests/test_bench.py), whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import cluster, common, comparisons, library, rawpika, report, scenarios
from bench.common import Names, step
from bench.events import EVENT, body_for

QUICK = {
    "count": 300,
    "rounds": 1,
    "work_rounds": 1,
    "samples": 200,
    "seconds": 1.0,
    "burst": 2000,
    "outbox_count": 300,
    "scaling": [10, 64],
    "cluster": False,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="events per throughput measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the publish and consume scenarios")
    parser.add_argument("--work-rounds", type=int, default=5, help="rounds of daemon / raw pika / FastStream work")
    parser.add_argument("--samples", type=int, default=10_000, help="send() calls timed for the caller overhead")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second of the latency scenario")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the latency scenario")
    parser.add_argument("--burst", type=int, default=100_000, help="events of the memory burst")
    parser.add_argument("--outbox-count", type=int, default=20_000, help="outbox rows relayed")
    parser.add_argument("--scaling", type=int, nargs=2, default=[150, 1600], help="events at --concurrency 1 and 16")
    parser.add_argument("--no-cluster", dest="cluster", action="store_false", help="skip the three-node cluster")
    parser.add_argument("--quick", action="store_true", help="tiny counts, no cluster: check that the bench runs")
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="directory of the results")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
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
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "out"}}
    with prepared(names) as server:
        _run_all(args, names, results)
    results["seconds"] = time.time() - started
    # Only a full run is "latest"; a quick one writes quick.* beside it.
    failed = report.write(results, report.machine(server), args.out, "quick" if args.quick else "latest")
    sys.exit(1 if failed else 0)


@contextlib.contextmanager
def prepared(names: Names) -> Iterator[dict[str, Any]]:
    """The run's exchange and queues, the publisher warm; all deleted afterwards. Yields the broker's properties."""
    queues, exchanges = [names.queue(name) for name in ("raw", "raw-latency", "sink")], [names.exchange]
    try:
        server = common.setup_broker(names)
        service_queues, service_exchanges = common.declare_service(names.queue("consumer"), [EVENT])
        queues, exchanges = queues + service_queues, service_exchanges + exchanges
        library.warm_up()
        common.purge(names.queue("consumer"))
        yield server
    finally:
        _clean_up(names, queues, exchanges)


def _run_all(args: argparse.Namespace, names: Names, results: dict[str, Any]) -> None:
    results["rounds"] = [throughput_round(args.count, names, raw_first=index % 2 == 0) for index in range(args.rounds)]
    results["overhead"] = step("caller overhead", lambda: library.caller_overhead(args.samples))
    common.purge(names.queue("consumer"))
    count = int(args.rate * args.seconds)
    results["latency_raw"] = step(
        "e2e latency, raw pika",
        lambda: scenarios.raw_latency(names.run_id, names.exchange, names.queue("raw-latency"), args.rate, count),
    )
    results["latency_library"] = step(
        "e2e latency, library",
        lambda: scenarios.library_latency(names.run_id, names.queue("consumer"), args.rate, count),
    )
    results["work"] = comparisons.work_rounds(names, args.count, args.work_rounds)
    results["scaling"] = comparisons.scaling(names, *args.scaling)
    results["ordered"] = comparisons.ordered(names, args.count)
    results["burst"] = step("memory burst", lambda: _burst(names, args.burst))
    results["outbox"] = step("outbox relay", lambda: _outbox(names, args.outbox_count))
    # Last: starting the three-node cluster loads the machine for half a minute.
    if args.cluster:
        rounds = min(args.rounds, 3)
        results["cluster"] = step("three-node cluster, quorum queues", lambda: cluster.measure(args.count, rounds))
    else:
        results["cluster"] = {"skipped": "the three-node cluster is not run with --quick or --no-cluster"}


def throughput_round(count: int, names: Names, *, raw_first: bool) -> dict[str, Any]:
    """One round of the publish and consume scenarios; raw pika first or the library first."""
    body, queue = body_for(1), names.queue("raw")
    figures: dict[str, Any] = {}

    def raw() -> None:
        publish = lambda: rawpika.publish_no_confirms(names.exchange, common.RAW_KEY, body, count)  # noqa: E731
        figures["raw_publish"] = step("raw publish, no confirms", publish)
        common.wait_for_depth(queue, count)
        common.purge(queue)
        confirms = lambda: rawpika.publish_confirms(names.exchange, common.RAW_KEY, body, count)  # noqa: E731
        figures["raw_confirms"] = step("raw publish, pipelined confirms", confirms)
        figures["raw_consume"] = step("raw consume, manual acks", lambda: rawpika.consume(queue, count))
        common.purge(queue)

    def lib() -> None:
        figures["library_publish"] = step("library send() + flush()", lambda: library.publish_throughput(count))
        daemon = lambda: scenarios.daemon(names.run_id, "noop", count, names.queue("consumer"))  # noqa: E731
        figures["daemon"] = step("library daemon", daemon)
        common.purge(names.queue("consumer"))

    for part in (raw, lib) if raw_first else (lib, raw):
        part()
    return figures


def _burst(names: Names, count: int) -> dict[str, Any]:
    env = common.child_env(names.run_id, BENCH_ROLE="producer", BENCH_EVENT=common.SINK_KEY)
    return common.in_child(["-m", "bench.library", "burst", "--count", str(count)], env, timeout=240)


def _outbox(names: Names, count: int) -> dict[str, Any]:
    if importlib.util.find_spec("broadcaster.outbox") is None:
        return {"skipped": "broadcaster.outbox cannot be imported"}
    env = common.child_env(
        names.run_id, BENCH_ROLE="producer", BENCH_EVENT=common.SINK_KEY, BENCH_PUBLISH_MODE="outbox"
    )
    return common.in_child(["-m", "bench.library", "outbox", "--count", str(count)], env, timeout=240)


def _clean_up(names: Names, queues: list[str], exchanges: list[str]) -> None:
    """Close the publisher, delete the run's broker objects and drop its PostgreSQL schema."""
    from django.db import connection  # noqa: PLC0415

    from broadcaster.transport import reset_publisher  # noqa: PLC0415

    for what, action in (
        ("close the publisher", lambda: reset_publisher(timeout=10)),
        (f"delete {names.exchange} and its queues", lambda: common.delete(queues, exchanges)),
        (f"drop schema {names.schema}", lambda: _drop_schema(names.schema)),
    ):
        try:
            action()
        except Exception as exc:
            print(f"bench: could not {what}: {exc}", file=sys.stderr)
    connection.close()


def _drop_schema(schema: str) -> None:
    from django.db import connection  # noqa: PLC0415

    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

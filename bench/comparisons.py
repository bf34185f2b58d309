"""The runner's part for receivers that work: rounds of daemon / raw pika / FastStream, the
I/O-bound scaling of `--concurrency`, ordered against unordered throughput.

Each function declares the queues it needs under the run's names and deletes them before
it returns, whatever happens.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

from bench import library, peers, workload
from bench.common import Names, purge
from bench.events import EVENT


def _measure(what: str, figures: dict[str, Any], key: str, measure: Callable[[], float]) -> None:
    print(f"  {what} ...", end="", flush=True, file=sys.stderr)
    try:
        figures[key] = float(measure())
        print(f" {figures[key]:,.0f}/s", file=sys.stderr)
    except Exception as exc:
        traceback.print_exc()
        figures[f"{key}_error"] = f"{type(exc).__name__}: {exc}"


def work_rounds(names: Names, count: int, rounds: int) -> list[dict[str, Any]]:
    """Rounds of: the library's publish and FastStream's, then the same work consumed three ways.

    One library publish of WORK_EVENT fills three queues (the daemon's service queue, a raw
    queue, a FastStream queue); each consumer then drains its own copy. The order of the
    three consumers and of the two publishers turns each round.
    """
    run = names.run_id
    service = f"bench-{run}-work"
    queues, exchanges = workload.declare(run, service, workload.WORK_EVENT)
    raw = workload.raw_queue(run, names.exchange, f"bench-{run}-work-raw", workload.WORK_EVENT)
    fast = workload.raw_queue(run, names.exchange, f"bench-{run}-work-faststream", workload.WORK_EVENT)
    queues += [raw, fast]
    has_peer = peers.available()
    out = []
    try:
        for index in range(rounds):
            figures: dict[str, Any] = {}
            publishers: list[tuple[str, str, Callable[[], float]]] = [
                ("library send() + flush()", "library_publish", lambda: library.publish_throughput(count))
            ]
            if has_peer:
                publishers.append(
                    ("FastStream gathered publish", "faststream_publish", lambda: _peer_publish(names, count))
                )
            for what, key, measure in publishers if index % 2 == 0 else publishers[::-1]:
                _measure(what, figures, key, measure)
                purge(names.consumer_queue)
            workload.fill(workload.work_sent, count)
            consumers: list[tuple[str, str, Callable[[], float]]] = [
                ("raw pika, same work", "raw_work", lambda: workload.raw_consume_work(raw, count)),
                ("daemon, same work", "daemon_work", lambda: workload.daemon(run, service, "work", count)),
            ]
            if has_peer:
                consumers.append(("FastStream, same work", "faststream_work", lambda: peers.consume_work(fast, count)))
            turn = index % len(consumers)
            for what, key, measure in consumers[turn:] + consumers[:turn]:
                _measure(what, figures, key, measure)
            purge(service, raw, fast)
            out.append(figures)
    finally:
        workload.delete(queues, exchanges)
    if not has_peer:
        out.append({"faststream_error": "FastStream is not installed (pip install -e '.[bench]')"})
    return out


def _peer_publish(names: Names, count: int) -> float:
    return peers.publish_confirms(names.exchange, EVENT, count)


def scaling(names: Names, slow_count: int = 150, fast_count: int = 1600) -> dict[str, Any]:
    """Events/s with a receiver that sleeps 20 ms: `--concurrency 16` against `--concurrency 1`."""
    run = names.run_id
    service = f"bench-{run}-sleep"
    queues, exchanges = workload.declare(run, service, workload.SLEEP_EVENT)
    figures: dict[str, Any] = {}
    try:
        for concurrency, count in ((1, slow_count), (16, fast_count)):
            workload.fill(workload.sleep_sent, count)
            _measure(
                f"20 ms receiver, --concurrency {concurrency}",
                figures,
                f"concurrency_{concurrency}",
                lambda c=concurrency, n=count: workload.daemon(run, service, "sleep", n, c),
            )
            purge(service)
    finally:
        workload.delete(queues, exchanges)
    return figures


def ordered(names: Names, count: int, concurrency: int = 4) -> dict[str, Any]:
    """Events/s of an ordered subscription over 8 partitions, and of the same unordered."""
    run = names.run_id
    ordered_queue, unordered_queue = f"bench-{run}-ordered", f"bench-{run}-unordered"
    queues, exchanges = workload.declare(run, ordered_queue, workload.KEYED_EVENT, ordered=True)
    more_queues, more_exchanges = workload.declare(run, unordered_queue, workload.KEYED_EVENT)
    queues, exchanges = queues + more_queues, exchanges + more_exchanges
    figures: dict[str, Any] = {"keys": workload.KEYS, "partitions": 8, "concurrency": concurrency}
    try:
        workload.fill(workload.keyed_sent, count)  # both subscriptions get a copy
        for mode, queue in (("unordered", unordered_queue), ("ordered", ordered_queue)):
            _measure(
                f"{mode}, --concurrency {concurrency}",
                figures,
                mode,
                lambda m=mode, q=queue: workload.daemon(run, q, m, count, concurrency),
            )
    finally:
        workload.delete(queues, exchanges)
    return figures

"""Receivers that work: the daemon against raw pika and FastStream doing the same per-event work,
the I/O-bound scaling of `--concurrency`, and ordered against unordered throughput.

The work is the same everywhere: decode the JSON body (the daemon and FastStream also
validate it) and append a line to a file. Each function declares its queues under the
run's names before they are filled, so that every consumer is timed on a full queue, and
deletes them before it returns, whatever happens. Results are lists of rounds, each a
dict of events per second by measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import library, peers, rawpika, scenarios
from bench.common import Names, bind_queue, declare_service, delete, purge, step
from bench.events import EVENT, KEYED_EVENT, KEYS, SLEEP_EVENT, WORK_EVENT, keyed_sent, sleep_sent, work_sent

Measures = list[tuple[str, str, Callable[[], float]]]


def _measure_all(figures: dict[str, Any], measures: Measures, turn: int) -> None:
    """Run `measures`, the one at `turn` first, into `figures`."""
    turn %= len(measures)
    for what, key, measure in measures[turn:] + measures[:turn]:
        figures[key] = step(what, measure)


def work_rounds(names: Names, count: int, rounds: int) -> list[dict[str, Any]]:
    """Rounds of: the library's publish and FastStream's, then the same work consumed three ways.

    One library publish of WORK_EVENT fills three queues (the daemon's service queue, a raw
    queue, a FastStream queue); each consumer then drains its own copy. Which publisher and
    which consumer goes first turns each round.
    """
    run, service = names.run_id, names.queue("work")
    queues, exchanges = declare_service(service, [WORK_EVENT])
    raw = bind_queue(names.queue("work-raw"), names.exchange, WORK_EVENT)
    fast = bind_queue(names.queue("work-faststream"), names.exchange, WORK_EVENT)
    has_peer = peers.available()
    out = []
    try:
        for index in range(rounds):
            figures: dict[str, Any] = {}
            publishers: Measures = [
                ("library send() + flush()", "library_publish", lambda: library.publish_throughput(count))
            ]
            consumers: Measures = [
                ("raw pika, same work", "raw_work", lambda: rawpika.consume(raw, count, work=True)),
                ("daemon, same work", "daemon_work", lambda: scenarios.daemon(run, "work", count, service)),
            ]
            if has_peer:
                publish = lambda: peers.publish_confirms(names.exchange, EVENT, count)  # noqa: E731
                publishers.append(("FastStream gathered publish", "faststream_publish", publish))
                consumers.append(("FastStream, same work", "faststream_work", lambda: peers.consume_work(fast, count)))
            else:
                figures["faststream"] = {"skipped": "FastStream is not installed (pip install -e '.[bench]')"}
            _measure_all(figures, publishers, index)
            purge(names.queue("consumer"))
            library.fill(work_sent, count)
            _measure_all(figures, consumers, index)
            purge(service, raw, fast)
            out.append(figures)
    finally:
        delete([*queues, raw, fast], exchanges)
    return out


def scaling(names: Names, slow_count: int, fast_count: int) -> list[dict[str, Any]]:
    """Events/s with a receiver that sleeps 20 ms: `--concurrency 16` against `--concurrency 1`."""
    service = names.queue("sleep")
    queues, exchanges = declare_service(service, [SLEEP_EVENT])
    figures: dict[str, Any] = {}
    try:
        for concurrency, count in ((1, slow_count), (16, fast_count)):
            library.fill(sleep_sent, count)
            figures[f"concurrency_{concurrency}"] = step(
                f"20 ms receiver, --concurrency {concurrency}",
                lambda c=concurrency, n=count: scenarios.daemon(names.run_id, "sleep", n, service, c),
            )
            purge(service)
    finally:
        delete(queues, exchanges)
    return [figures]


def ordered(names: Names, count: int, concurrency: int = 4) -> list[dict[str, Any]]:
    """Events/s of an ordered subscription over PARTITIONS queues, and of the same unordered."""
    ordered_queue, unordered_queue = names.queue("ordered"), names.queue("unordered")
    queues, exchanges = declare_service(ordered_queue, [KEYED_EVENT], ordered=True)
    more_queues, more_exchanges = declare_service(unordered_queue, [KEYED_EVENT])
    figures: dict[str, Any] = {"keys": KEYS, "concurrency": concurrency}
    try:
        library.fill(keyed_sent, count)  # both subscriptions get a copy
        for mode, queue in (("unordered", unordered_queue), ("ordered", ordered_queue)):
            figures[mode] = step(
                f"{mode}, --concurrency {concurrency}",
                lambda m=mode, q=queue: scenarios.daemon(names.run_id, m, count, q, concurrency),
            )
    finally:
        delete(queues + more_queues, exchanges + more_exchanges)
    return [figures]

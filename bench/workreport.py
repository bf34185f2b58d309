"""Rows of the results table for receivers that work, scaling, ordering and latency stalls."""

from __future__ import annotations

import math
from typing import Any

from bench.report import Row, _at_least, _figures, _get, _median, _num, _paired_ratio, _rate, _ratio, _shown


def rows(results: dict[str, Any]) -> list[Row]:
    """The rows of `comparisons` and `stalls` results (absent ones are skipped)."""
    out: list[Row] = []
    if isinstance(results.get("workload"), list):
        out += _work_rows(results["workload"])
    if isinstance(results.get("scaling"), dict):
        out += _scaling_rows(results["scaling"])
    if isinstance(results.get("ordered"), dict):
        out += _ordered_rows(results["ordered"])
    stalls = results.get("latency_library", {})
    if isinstance(stalls, dict) and isinstance(stalls.get("stalls"), dict):
        out += _stall_rows(stalls["stalls"])
    return out


def _paired(rounds: list[dict[str, Any]], measure: str, key: str, base: str, *, limit: float, target: str) -> Row:
    ratio = _paired_ratio(rounds, key, base)
    return Row(
        measure,
        _rate(_median(_figures(rounds, key))),
        _rate(_median(_figures(rounds, base))),
        _ratio(ratio),
        target,
        _at_least(ratio, limit),
    )


def _work_rows(rounds: list[dict[str, Any]]) -> list[Row]:
    return [
        _paired(
            rounds,
            "Consume with work (decode JSON, append a line): consume_signals vs raw pika, prefetch 100, an ack each",
            "daemon_work",
            "raw_work",
            limit=0.8,
            target=">= 0.80x",
        ),
        _paired(
            rounds,
            "Publish with confirms: send() + flush() vs FastStream's gathered publish() (aio-pika)",
            "library_publish",
            "faststream_publish",
            limit=1.0,
            target="> 1x (issue: 2.6x)",
        ),
        _paired(
            rounds,
            "Consume with work: consume_signals vs a pydantic-typed FastStream subscriber",
            "daemon_work",
            "faststream_work",
            limit=1.0,
            target="> 1x (issue: 1.5x)",
        ),
    ]


def _scaling_rows(scaling: dict[str, Any]) -> list[Row]:
    many, one = _get(scaling, "concurrency_16"), _get(scaling, "concurrency_1")
    ratio = many / one if one else math.nan
    return [
        Row(
            "Receiver that sleeps 20 ms: --concurrency 16 vs --concurrency 1",
            _rate(many),
            _rate(one),
            _ratio(ratio),
            ">= 10x",
            _at_least(ratio, 10),
        )
    ]


def _ordered_rows(ordered: dict[str, Any]) -> list[Row]:
    lib, base = _get(ordered, "ordered"), _get(ordered, "unordered")
    return [
        Row(
            f"Ordered subscription, PARTITIONS={ordered.get('partitions')}, {ordered.get('keys')} keys, "
            f"--concurrency {ordered.get('concurrency')}, with work vs the same unordered",
            _rate(lib),
            _rate(base),
            _ratio(lib / base if base else math.nan),
            "reported",
            None,
        )
    ]


def _stall_rows(stalls: dict[str, Any]) -> list[Row]:
    summary = stalls.get("summary", {})
    stages = stalls.get("stages", {})
    shown = ", ".join(
        f"{name.replace('_', ' ')} {_num(_get(stage, 'p99_ms'), 'ms', 2)} / {_num(_get(stage, 'max_ms'), 'ms', 1)}"
        for name, stage in stages.items()
    )
    dominated = summary.get("dominated_by", {})
    slow = summary.get("slow_events", 0)
    return [
        _shown("  latency by stage, p99 / max: " + shown, "-"),
        _shown(
            f"  events over {stalls.get('slow_ms', 10):g} ms: {slow}; by their longest stage: "
            + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in dominated.items())
            + f"; with the machine stalled > 5 ms meanwhile: {summary.get('machine_oversleep_over_5ms', 0)}"
            + f"; with a GC pause > 5 ms: {summary.get('gc_over_5ms', 0)}",
            "-",
        ),
        _shown(
            "  the machine: oversleeps of a 1 ms sleep loop > 10 ms, longest; GC pauses > 5 ms (producer, daemon)",
            f"{stalls.get('machine_oversleeps', {}).get('over_10ms', 0)}, "
            f"{_num(_get(stalls.get('machine_oversleeps', {}), 'max_ms'), 'ms')}; "
            f"{stalls.get('producer_gc', {}).get('over_5ms', 0)}, {stalls.get('daemon_gc', {}).get('over_5ms', 0)}",
        ),
    ]

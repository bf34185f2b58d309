"""The results table: each library figure beside its baseline of the same run, the ratio and its target.

Written to <out>/<name>.md and <name>.json (every figure of every round). Ratios are the
median of the per-round ratios; docs/performance.md says how to read them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# (measure, group of rounds, library key, baseline key, minimum ratio or None where only reported)
PAIRED = [
    ("Publish: send() + flush() vs raw pika without confirms (the ceiling)",
     "rounds", "library_publish", "raw_publish", None),
    ("Confirmed publish: send() + flush() vs raw pipelined confirms",
     "rounds", "library_publish", "raw_confirms", 0.7),
    ("Consume: consume_signals, no-op receiver vs raw pika, an ack each",
     "rounds", "daemon", "raw_consume", 0.5),
    ("Consume with work (decode, append a line): consume_signals vs raw pika",
     "work", "daemon_work", "raw_work", 0.8),
    ("Publish with confirms: send() + flush() vs FastStream's gathered publish()",
     "work", "library_publish", "faststream_publish", 1.0),
    ("Consume with work: consume_signals vs a pydantic-typed FastStream subscriber",
     "work", "daemon_work", "faststream_work", 1.0),
    ("Receiver that sleeps 20 ms: --concurrency 16 vs --concurrency 1",
     "scaling", "concurrency_16", "concurrency_1", 10.0),
    ("Ordered, PARTITIONS=8, 100 keys, --concurrency 4, with work vs the same unordered",
     "ordered", "ordered", "unordered", None),
    ("Cluster (3 nodes, quorum): confirmed publish vs raw pipelined confirms",
     "cluster", "library_publish", "raw_confirms", None),
    ("Cluster (3 nodes, quorum): consume_signals vs raw pika",
     "cluster", "daemon", "raw_consume", None),
]  # fmt: skip
LATENCY_TARGETS_MS = {"p50": 2.0, "p99": 5.0, "max": 50.0}


@dataclass
class Row:
    """One line of the table; `passed` is None where there is no target."""

    measure: str
    library: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "reported"
    passed: bool | None = None

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "-"}[self.passed]


def _get(mapping: Any, key: str) -> float:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _fmt(value: float, unit: str = "/s", digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}{unit}"


def _check(value: float, limit: float | None, *, most: bool = False) -> bool | None:
    if limit is None or math.isnan(value):
        return None
    return value <= limit if most else value >= limit


def _rounds(results: dict[str, Any], group: str) -> list[dict[str, Any]]:
    value = results.get(group)
    value = value.get("rounds") if isinstance(value, dict) else value
    return value if isinstance(value, list) else []


def _ratio(value: float, base: float) -> float:
    return value / base if base else math.nan


def rows(results: dict[str, Any]) -> list[Row]:
    """The table: one row per figure, with its baseline, ratio and target."""
    out = []
    for measure, group, key, base, limit in PAIRED:
        rounds = _rounds(results, group)
        ratio = _median([_ratio(_get(r, key), _get(r, base)) for r in rounds])
        figures = (_fmt(_median([_get(r, name) for r in rounds])) for name in (key, base))
        target = "reported" if limit is None else f">= {limit:.2f}x"
        out.append(Row(measure, *figures, _fmt(ratio, "x", 2), target, _check(ratio, limit)))
    return out + _single_rows(results)


def _single_rows(results: dict[str, Any]) -> list[Row]:
    """Rows of one figure each: the caller's cost, latency, the burst, the outbox."""
    out = []
    overhead = results.get("overhead")
    for quantile, limit in (("p50", 30.0), ("p99", None)):
        value = _get(overhead, f"overhead_{quantile}_us")
        plain = _fmt(_get(overhead, f"plain_{quantile}_us"), " us", 1) + " (no broadcast)"
        target = "reported" if limit is None else f"<= {limit:g} us"
        measure = f"Caller-thread cost added by a broadcast send(), {quantile}"
        out.append(Row(measure, _fmt(value, " us", 1), plain, "-", target, _check(value, limit, most=True)))
    config = results.get("config", {})
    latency = (
        f"End-to-end latency send() -> receiver at {config.get('rate', 0):g}/s over {config.get('seconds', 0):g} s"
    )
    for quantile, limit in LATENCY_TARGETS_MS.items():
        lib = _get(results.get("latency_library"), f"{quantile}_ms")
        raw = _get(results.get("latency_raw"), f"{quantile}_ms")
        ratio = _fmt(_ratio(lib, raw), "x", 2)
        passed = _check(lib, limit, most=True)
        out.append(
            Row(f"{latency}, {quantile}", _fmt(lib, " ms", 2), _fmt(raw, " ms", 2), ratio, f"<= {limit:g} ms", passed)
        )
    burst, outbox = results.get("burst"), results.get("outbox")
    burst_of = f"Burst of {config.get('burst', 0):,}"
    peak, limit = _get(burst, "peak_pending"), _get(burst, "max_buffer")
    buffer, buffer_ok = f"<= MAX_BUFFER ({_fmt(limit, '')})", _check(peak, limit, most=True)
    relay = _get(outbox, "relay_events_per_s")
    return [
        *out,
        Row(f"{burst_of}: publisher buffer high-water mark", _fmt(peak, " events"), "-", "-", buffer, buffer_ok),
        Row(f"{burst_of}: RSS growth (peak - before)", _fmt(_get(burst, "rss_growth_mb"), " MB", 1)),
        Row(f"{burst_of}: send() + flush() throughput", _fmt(_get(burst, "events_per_s"))),
        Row("Outbox relay: relay_outbox --once (PostgreSQL)", _fmt(relay), "-", "-", ">= 3,000/s", _check(relay, 3000)),
        Row("Outbox write: send() in transactions of 100", _fmt(_get(outbox, "write_events_per_s"))),
    ]


def failures(value: Any, kinds: tuple[str, ...] = ("error",), where: str = "") -> list[str]:
    """Every measurement that raised (or, with "skipped" in `kinds`, was skipped), as "where: why"."""
    if isinstance(value, list):
        return [text for i, item in enumerate(value) for text in failures(item, kinds, f"{where}[{i}]")]
    if not isinstance(value, dict):
        return []
    own = [f"{where}: {value[kind]}" for kind in kinds if kind in value]
    return own + [text for key, item in value.items() for text in failures(item, kinds, f"{where}.{key}".lstrip("."))]


def machine(server: dict[str, Any]) -> dict[str, Any]:
    """What the figures were measured on."""
    version = server.get("version", b"?")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
        **{name: metadata.version(name) for name in ("pika", "pydantic", "Django")},
    }


def markdown(table: list[Row], info: dict[str, Any], results: dict[str, Any]) -> str:
    """The table as Markdown, headed by the machine and the date, followed by what failed."""
    config = results["config"]
    lines = [
        f"Run of {info['date']} ({info['cores']} cores, load average {', '.join(map(str, info['load_average']))} "
        f"at the end), RabbitMQ {info['rabbitmq']}, Python {info['python']}, pika {info['pika']}, "
        f"pydantic {info['pydantic']}, Django {info['Django']}; {config['rounds']} round(s) of "
        f"{config['count']:,} events, {results.get('seconds', 0):.0f} s in all.",
        "",
        "| measure | library | baseline (same run) | ratio | target | result |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        *(f"| {r.measure} | {r.library} | {r.baseline} | {r.ratio} | {r.target} | {r.result} |" for r in table),
    ]
    if config.get("quick"):
        lines[:0] = ["A quick run (`--quick`): it shows that every scenario runs; its figures mean nothing.", ""]
    if failed := failures(results, ("error", "skipped")):
        lines += ["", f"**{len(failed)} measurement(s) failed or were skipped:**", ""]
        lines += [f"- {' '.join(text.split())[:300]}" for text in failed]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], info: dict[str, Any], out: Path, name: str) -> list[str]:
    """Print the table, write <name>.md and <name>.json; return the measurements that failed."""
    table = rows(results)
    text = markdown(table, info, results)
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text)
    failed = failures(results)
    data = {"machine": info, "rows": [asdict(r) | {"result": r.result} for r in table], "failures": failed}
    (out / f"{name}.json").write_text(json.dumps(data | {"results": results}, indent=1, default=str) + "\n")
    missed = [r.measure for r in table if r.passed is False]
    print(f"{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else ""), flush=True)
    return failed

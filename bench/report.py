"""The results table (ratio and pass/fail per target), written as Markdown, JSON and a latency plot."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import RESULTS

README = Path(__file__).resolve().parent / "README.md"
_BEGIN, _END = "<!-- bench:results -->", "<!-- /bench:results -->"


@dataclass
class Row:
    """One line of the table; `passed` is None where there is no target."""

    measure: str
    library: str
    baseline: str
    ratio: str
    target: str
    passed: bool | None

    @property
    def result(self) -> str:
        return {True: "PASS", False: "FAIL", None: "-"}[self.passed]


def machine(server: dict[str, Any]) -> dict[str, Any]:
    """What the figures were measured on."""
    version = server.get("version", b"?")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
        **{name: metadata.version(name) for name in ("pika", "pydantic", "Django", "psycopg")},
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "?"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "?"


def _figures(rounds: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rounds if isinstance(r.get(key), float)]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _paired_ratio(rounds: list[dict[str, Any]], key: str, baseline: str) -> float:
    """Median over rounds of library / raw pika measured in the same round."""
    ratios = [
        r[key] / r[baseline] for r in rounds if isinstance(r.get(key), float) and isinstance(r.get(baseline), float)
    ]
    return _median(ratios)


def _rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}/s"


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def _num(value: Any, unit: str, digits: int = 1) -> str:
    return f"{value:,.{digits}f} {unit}" if isinstance(value, int | float) and not math.isnan(value) else "n/a"


def _fifths(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "n/a"
    return ", ".join(f"{value:.1f}" for value in values) + " us"


def _share(overhead: dict[str, Any]) -> str:
    share = _get(overhead, "normal_share")
    return "n/a" if math.isnan(share) else f"{share:.0%} of them"


def _shown(measure: str, value: str, target: str = "diagnostic") -> Row:
    """A row of a figure shown for what it tells, with no baseline and nothing to pass."""
    return Row(measure, value, "-", "-", target, None)


def _get(mapping: Any, key: str) -> float:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def _at_least(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value >= limit


def _at_most(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def rows(results: dict[str, Any]) -> list[Row]:
    """The table: one row per figure, with its baseline, ratio and target."""
    rounds = results.get("rounds", [])
    out = [
        Row(
            "Publish, no confirms (raw pika, BlockingChannel)",
            "-",
            _rate(_median(_figures(rounds, "raw_publish"))),
            "-",
            "baseline",
            None,
        ),
    ]
    confirmed = _paired_ratio(rounds, "library_publish", "raw_confirms")
    out.append(
        Row(
            "Confirmed publish: N x send() + flush() vs raw pipelined confirms",
            _rate(_median(_figures(rounds, "library_publish"))),
            _rate(_median(_figures(rounds, "raw_confirms"))),
            _ratio(confirmed),
            ">= 0.70x",
            _at_least(confirmed, 0.7),
        )
    )
    out.extend(_outbox_rows(results.get("outbox", {})))
    out.extend(_overhead_rows(results.get("overhead", {}), results.get("overhead_apart", {})))
    daemon = _paired_ratio(rounds, "daemon", "raw_consume")
    out.append(
        Row(
            "Consume: consume_signals to a no-op receiver vs raw manual acks",
            _rate(_median(_figures(rounds, "daemon"))),
            _rate(_median(_figures(rounds, "raw_consume"))),
            _ratio(daemon),
            ">= 0.50x",
            _at_least(daemon, 0.5),
        )
    )
    out.extend(_latency_rows(results))
    out.extend(_burst_rows(results.get("burst", {})))
    out.extend(_cluster_rows(results.get("cluster", {})))
    from bench import workreport  # noqa: PLC0415 - it builds on this module

    out.extend(workreport.rows(results))
    return out


def _cluster_rows(cluster: dict[str, Any]) -> list[Row]:
    """Library vs raw pika on the three-node cluster with quorum queues (bench.cluster)."""
    if "rounds" not in cluster:
        return [_shown("Three-node cluster, quorum queues", f"not run: {cluster.get('error', 'no result')}")]
    rounds = cluster["rounds"]
    pairs = [
        ("Cluster (3 nodes, quorum): confirmed publish vs raw pipelined confirms", "library_publish", "raw_confirms"),
        ("Cluster (3 nodes, quorum): consume_signals vs raw manual acks", "daemon", "raw_consume"),
    ]
    return [
        Row(
            measure,
            _rate(_median(_figures(rounds, key))),
            _rate(_median(_figures(rounds, baseline))),
            _ratio(_paired_ratio(rounds, key, baseline)),
            "reported",
            None,
        )
        for measure, key, baseline in pairs
    ]


def _outbox_rows(outbox: dict[str, Any]) -> list[Row]:
    if not outbox.get("available", False) or "error" in outbox:
        why = outbox.get("error") or outbox.get("reason") or "not run"
        return [
            Row("Outbox relay: relay_outbox --once (PostgreSQL)", "not available", "-", "-", ">= 3,000/s", None),
            Row(f"  ({why})", "", "", "", "", None),
        ]
    relay = _get(outbox, "relay_events_per_s")
    return [
        Row(
            "Outbox relay: relay_outbox --once (PostgreSQL)",
            _rate(relay),
            "-",
            "-",
            ">= 3,000/s",
            _at_least(relay, 3000),
        ),
        _shown(
            f"Outbox write: send() in transactions of {outbox.get('per_transaction')}",
            _rate(_get(outbox, "write_events_per_s")),
            "reported",
        ),
    ]


def _overhead_rows(overhead: dict[str, Any], apart: dict[str, Any]) -> list[Row]:
    p50, p99 = _get(overhead, "overhead_p50_us"), _get(overhead, "overhead_p99_us")
    return [
        Row(
            "Caller-thread cost added by a broadcast send(), median",
            _num(p50, "us"),
            f"{_num(_get(overhead, 'plain_p50_us'), 'us')} (no broadcast)",
            "-",
            "<= 30 us",
            _at_most(p50, 30),
        ),
        _shown(
            "  the same median over each fifth of the samples, in order",
            _fifths(overhead.get("overhead_p50_us_by_fifth")),
            "drift within the run",
        ),
        _shown(
            "  the machine's speed meanwhile: a fixed pure-Python loop, median over each fifth",
            _fifths(overhead.get("machine_speed_us_by_fifth")),
        ),
        _shown(
            f"  the median in samples taken while that loop ran near its best ({_share(overhead)})",
            _num(_get(overhead, "normal_overhead_p50_us"), "us"),
        ),
        _shown(
            "  the median in the others, the machine's slow phases",
            _num(_get(overhead, "slow_overhead_p50_us"), "us"),
        ),
        _shown(
            "  the same median with the publisher's I/O thread kept on another core (bench only)",
            _num(_get(apart, "overhead_p50_us"), "us"),
        ),
        _shown(
            "  the caller's own work, warm, no I/O thread (a transport that drops events), median",
            _num(_get(overhead, "warm_overhead_p50_us"), "us"),
        ),
        Row(
            "Caller-thread cost added by a broadcast send(), p99",
            _num(p99, "us"),
            f"{_num(_get(overhead, 'plain_p99_us'), 'us')} (no broadcast)",
            "-",
            "reported",
            None,
        ),
    ]


def _latency_rows(results: dict[str, Any]) -> list[Row]:
    library, raw = results.get("latency_library", {}), results.get("latency_raw", {})
    rate = results.get("config", {}).get("rate", 500)
    out = []
    seconds = results.get("config", {}).get("seconds", 60)
    for quantile, limit in (("p50", 2.0), ("p99", 5.0), ("max", 50.0)):
        lib, base = _get(library, f"{quantile}_ms"), _get(raw, f"{quantile}_ms")
        out.append(
            Row(
                f"End-to-end latency send() -> remote receiver at {rate:g}/s over {seconds:g} s, {quantile}",
                _num(lib, "ms", 2),
                _num(base, "ms", 2),
                _ratio(lib / base if base else math.nan),
                f"<= {limit:g} ms",
                _at_most(lib, limit),
            )
        )
    return out


def _burst_rows(burst: dict[str, Any]) -> list[Row]:
    peak, limit = _get(burst, "peak_pending"), _get(burst, "max_buffer")
    count = burst.get("count", 0)
    return [
        Row(
            f"Burst of {count:,}: publisher buffer high-water mark",
            _num(peak, "events", 0),
            "-",
            "-",
            f"<= MAX_BUFFER ({limit:,.0f})" if not math.isnan(limit) else "<= MAX_BUFFER",
            None if math.isnan(limit) else peak <= limit,
        ),
        _shown(f"Burst of {count:,}: RSS growth (peak - before)", _num(_get(burst, "rss_growth_mb"), "MB"), "reported"),
        _shown(f"Burst of {count:,}: send() + flush() throughput", _rate(_get(burst, "events_per_s")), "reported"),
    ]


def failures(results: dict[str, Any]) -> list[str]:
    """Every measurement that raised (they are in the JSON), as "where: error"."""
    found = []
    for key, value in results.items():
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, dict):
                continue
            where = key if index is None else f"{key}[{index}]"
            found += [f"{where}.{name}: {err}" for name, err in item.items() if name.endswith("error")]
            found += [
                f"{where}.{name}: {sub['error']}"
                for name, sub in item.items()
                if isinstance(sub, dict) and "error" in sub
            ]
    return found


def markdown(table: list[Row], info: dict[str, Any], results: dict[str, Any]) -> str:
    """The table as Markdown, headed by the machine and the date."""
    lines = [
        f"Run of {info['date']} on {info['cpu']} ({info['cores']} cores, load average "
        f"{', '.join(map(str, info['load_average']))} at the end), RabbitMQ {info['rabbitmq']}, "
        f"Python {info['python']}, pika {info['pika']}, pydantic {info['pydantic']}, Django {info['Django']}; "
        f"{results['config']['rounds']} round(s) of {results['config']['count']:,} events, "
        f"{results.get('seconds', 0):.0f} s in all.",
        "",
        "| measure | library | baseline (same run) | ratio | target | result |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    lines += [f"| {r.measure} | {r.library} | {r.baseline} | {r.ratio} | {r.target} | {r.result} |" for r in table]
    if failed := failures(results):
        lines += ["", f"**{len(failed)} measurement(s) failed in this run; its figures are not to be trusted:**", ""]
        lines += [f"- {' '.join(text.split())[:300]}" for text in failed]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Latency distributions of the library and of raw pika, as histogram and CDF."""
    import matplotlib  # noqa: PLC0415 - a dev dependency, loaded only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    figure, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in (("latency_raw", "raw pika"), ("latency_library", "django-signal-broadcaster")):
        values = np.asarray(results.get(key, {}).get("latencies_us", []), dtype=float) / 1000
        if not len(values):
            continue
        bins = np.logspace(np.log10(max(values.min(), 0.01)), np.log10(values.max()), 80)
        hist.hist(values, bins=bins, histtype="step", linewidth=1.5, label=label)
        ordered = np.sort(values)
        cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=label)
        for quantile in (50, 99):
            cdf.axvline(np.percentile(values, quantile), linestyle=":", linewidth=0.8, color=cdf.lines[-1].get_color())
    rate = results.get("config", {}).get("rate", 500)
    hist.set(
        xscale="log", xlabel="latency (ms, log)", ylabel="events", title=f"send() -> remote receiver at {rate:g}/s"
    )
    cdf.set(xscale="log", xlabel="latency (ms, log)", ylabel="fraction of events", title="CDF (dotted: p50, p99)")
    for axes in (hist, cdf):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], info: dict[str, Any], name: str = "latest") -> None:
    """Print the table; write <name>.md, <name>.json, a latency plot and (latest only) the README section."""
    RESULTS.mkdir(exist_ok=True)
    table = rows(results)
    text = markdown(table, info, results)
    print("\n" + text)
    (RESULTS / f"{name}.md").write_text(text)
    data = {"machine": info, "rows": [asdict(r) | {"result": r.result} for r in table], "results": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    try:
        plot(results, RESULTS / ("latency.png" if name == "latest" else f"latency-{name}.png"))
    except Exception as exc:
        print(f"bench: no latency plot: {exc}", file=sys.stderr)
    if name == "latest" and not failures(results):
        _update_readme(text)
    elif name == "latest":
        print("bench: measurements failed, so bench/README.md keeps the last clean table", file=sys.stderr)
    failed = [r.measure for r in table if r.passed is False]
    print(f"{len(failed)} target(s) missed" + (": " + "; ".join(failed) if failed else ""), file=sys.stderr)


def _update_readme(text: str) -> None:
    if not README.exists():
        return
    current = README.read_text()
    start, end = current.find(_BEGIN), current.find(_END)
    if start < 0 or end < start:
        return
    README.write_text(current[: start + len(_BEGIN)] + "\n" + text + current[end:])

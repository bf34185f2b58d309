"""Throughput on the three-node cluster of scripts/cluster.sh, with quorum queues, beside raw pika.

`measure()` (in the `make bench` run) starts the cluster unless it runs, runs this module
in a child process whose broker is the cluster (BENCH_BROKER_URL lists the three nodes,
BENCH_QUEUE_TYPE=quorum), and stops the cluster again if it started it. The child runs
rounds of `bench.run.throughput_round` there (publish and consume), raw pika on
the first node (where the library connects first) to a quorum queue as the baseline, and
prints the rounds as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from bench import common

SCRIPT = common.ROOT / "scripts" / "cluster.sh"


def measure(count: int, rounds: int) -> dict[str, Any]:
    """Rounds of publish and daemon throughput, library and raw pika, on the cluster."""
    running = subprocess.run([str(SCRIPT), "status"], capture_output=True, timeout=60, check=False).returncode == 0
    started = time.monotonic()
    if not running:
        subprocess.run([str(SCRIPT), "start"], capture_output=True, timeout=300, check=True)
    start_seconds = time.monotonic() - started
    try:
        urls = subprocess.run([str(SCRIPT), "urls"], capture_output=True, text=True, check=True).stdout.strip()
        env = {**os.environ, "BENCH_BROKER_URL": urls, "BENCH_QUEUE_TYPE": "quorum"}
        args = ["-m", "bench.cluster", "--count", str(count), "--rounds", str(rounds)]
        result = common.in_child(args, env, timeout=300 + rounds * count / 100)
    finally:
        if not running:
            subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120, check=False)
    return {**result, "start_seconds": None if running else start_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:10]
    os.environ.update(common.child_env(run_id, BENCH_ROLE="producer", BENCH_LOG_LEVEL="WARNING"))
    import django  # noqa: PLC0415 - the environment above must be in place first

    django.setup()
    from bench import run  # noqa: PLC0415 - it reads the Django settings

    names = common.Names(run_id)
    with run.prepared(names):
        rounds = [run.throughput_round(args.count, names, raw_first=index % 2 == 0) for index in range(args.rounds)]
    print(json.dumps({"rounds": rounds}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

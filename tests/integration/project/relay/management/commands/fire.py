"""`manage.py fire SIGNAL --data JSON [--count N] [--rollback] [--no-flush]`: send a signal as app code would.

The fault-injection tests add: ``--sequence START`` numbers the events (``n`` = START, START+1, ...),
``--each`` sends each one in its own autocommit transaction (``--pace`` seconds apart, or spread
over ``--seconds`` on a schedule, however fast a send is), and
``--report FILE`` writes which numbers send() accepted and which it refused, and the slowest send().
"""

import json
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

import broadcaster
from relay.events import SIGNALS


class Command(BaseCommand):
    help = "Send one of relay.events' signals COUNT times, optionally in a transaction that rolls back."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("signal", choices=sorted(SIGNALS))
        parser.add_argument("--data", type=json.loads, default={}, help="the signal's kwargs as a JSON object")
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--rollback", action="store_true", help="send inside an atomic block that rolls back")
        parser.add_argument("--no-flush", action="store_true", help="exit at once, leaving the flush to the exit hook")
        parser.add_argument("--flush-timeout", type=float, default=10.0)
        parser.add_argument("--sequence", type=int, help="send n=SEQUENCE, SEQUENCE+1, ... in the payload")
        parser.add_argument("--each", action="store_true", help="no surrounding transaction: each send commits")
        parser.add_argument("--pace", type=float, default=0.0, help="seconds to sleep between sends (with --each)")
        parser.add_argument("--seconds", type=float, help="with --each: spread the sends over this long")
        parser.add_argument("--report", type=Path, help="with --each: write accepted/refused numbers as JSON")
        parser.add_argument("--max-refusals", type=int, help="with --each: stop after this many refused sends")
        parser.add_argument(
            "--keys", type=int, help="keyed: event i gets key k{i % KEYS} and seq i // KEYS (interleaved keys)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["each"]:
            self._each(options)
        else:
            with transaction.atomic():
                for i in range(options["count"]):
                    self._send(options, i)
                transaction.set_rollback(options["rollback"])
        if not options["no_flush"]:
            broadcaster.flush(timeout=options["flush_timeout"])

    def _send(self, options: dict[str, Any], i: int) -> None:
        data = dict(options["data"])
        if options["sequence"] is not None:
            data["n"] = options["sequence"] + i
        if options["keys"]:
            data.update(key=f"k{i % options['keys']}", seq=i // options["keys"])
        SIGNALS[options["signal"]].send(sender=None, **data)

    def _each(self, options: dict[str, Any]) -> None:
        report: dict[str, Any] = {"accepted": [], "refused": [], "slowest": 0.0}
        spread = options["seconds"] / options["count"] if options["seconds"] else None
        due = time.monotonic()
        for i in range(options["count"]):
            started = time.monotonic()
            try:
                self._send(options, i)
                report["accepted"].append(i)
            except broadcaster.PublishBufferFull:
                report["refused"].append(i)
            report["slowest"] = max(report["slowest"], time.monotonic() - started)
            if options["max_refusals"] is not None and len(report["refused"]) >= options["max_refusals"]:
                break
            if spread is None:
                time.sleep(options["pace"])
            else:  # a schedule: the run lasts SECONDS on a fast machine, longer only on a slow one
                due += spread
                time.sleep(max(0.0, due - time.monotonic()))
        if options["report"] is not None:
            start = options["sequence"] or 0
            report["accepted"] = [start + i for i in report["accepted"]]
            report["refused"] = [start + i for i in report["refused"]]
            tmp = options["report"].with_suffix(".tmp")
            tmp.write_text(json.dumps(report))
            tmp.replace(options["report"])  # the test polls for the file: it must appear whole

"""`manage.py fire SIGNAL --data JSON [--count N] [--rollback] [--no-flush]`: send a signal as app code would."""

import json
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

    def handle(self, *args: Any, **options: Any) -> None:
        signal = SIGNALS[options["signal"]]
        with transaction.atomic():
            for _ in range(options["count"]):
                signal.send(sender=None, **options["data"])
            transaction.set_rollback(options["rollback"])
        if not options["no_flush"]:
            broadcaster.flush(timeout=10)

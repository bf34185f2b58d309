"""`manage.py consume_signals`: the consumer daemon of this service."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster.consumer import Consumer
from broadcaster.exceptions import BroadcasterError
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings


class Command(BaseCommand):
    help = "Consume this service's queue and re-emit each subscribed event as a local signal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prefetch",
            type=_positive,
            help="unacknowledged messages held at once (default: PREFETCH)",
        )
        parser.add_argument("--max-messages", type=_positive, help="stop after handling this many messages")

    def handle(self, *args: Any, **options: Any) -> None:
        _log_to_stderr_unless_configured()
        try:
            consumer = Consumer(
                get_settings(),
                subscriptions(),
                prefetch=options["prefetch"],
                max_messages=options["max_messages"],
            )
        except BroadcasterError as exc:
            raise CommandError(str(exc)) from exc
        _stop_on_signals(consumer)
        try:
            consumer.run()
        except BroadcasterError as exc:
            raise CommandError(f"consume_signals: {exc}") from exc


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _stop_on_signals(consumer: Consumer) -> None:
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            # A second signal means "now": the broker requeues whatever is unacked.
            logging.getLogger("broadcaster.consumer").warning("consume_signals: second signal, exiting at once")
            os._exit(1)
        received.append(signum)
        logging.getLogger("broadcaster.consumer").info(
            "consume_signals: %s received, stopping after the message in hand",
            signal.Signals(signum).name,
        )
        consumer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _log_to_stderr_unless_configured() -> None:
    # The start/stop/failure lines must be seen even where LOGGING leaves them out.
    package = logging.getLogger("broadcaster")
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)

"""`manage.py consume_signals`: the consumer daemon of this service."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import observability
from broadcaster.consumer import Consumer
from broadcaster.daemon import log_to_stderr_unless_configured, stop_on_signals
from broadcaster.exceptions import BroadcasterError
from broadcaster.management.options import positive
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings


class Command(BaseCommand):
    help = "Consume this service's queue and re-emit each subscribed event as a local signal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prefetch", type=positive, help="unacknowledged messages held at once (default: PREFETCH)"
        )
        parser.add_argument("--max-messages", type=positive, help="stop after handling this many messages")
        parser.add_argument(
            "--concurrency",
            type=positive,
            help="receivers run at once, each on a thread with its own database connection (default: CONCURRENCY)",
        )
        parser.add_argument("--metrics-port", type=int, help="serve /metrics (Prometheus) and /healthz on this port")

    def handle(self, *args: Any, **options: Any) -> None:
        log_to_stderr_unless_configured()
        try:
            settings = get_settings()
            consumer = Consumer(
                settings,
                subscriptions(),
                prefetch=options["prefetch"],
                max_messages=options["max_messages"],
                concurrency=options["concurrency"],
            )
            stop_on_signals("consume_signals", consumer.stop, settings.shutdown_timeout)
            if options["metrics_port"] is not None:
                observability.serve(options["metrics_port"], consumer.healthy)
            consumer.run()
        except BroadcasterError as exc:
            raise CommandError(f"consume_signals: {exc}") from exc

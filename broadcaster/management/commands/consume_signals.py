"""`manage.py consume_signals`: the consumer daemon of this service, and pausing it.

Exit codes: 0 stopped by SIGTERM/SIGINT or after --max-messages, or --pause/--resume
sent; 1 a settings or broker error (no broker at start, or for --pause/--resume), or
still busy SHUTDOWN_TIMEOUT seconds after the stop signal; 2 bad usage.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import control, probes
from broadcaster.consumer import Consumer
from broadcaster.daemon import (
    freeze_startup_objects,
    log_to_stderr_unless_configured,
    stop_on_signals,
    toggle_on_sigusr1,
)
from broadcaster.exceptions import BroadcasterError
from broadcaster.management.options import positive
from broadcaster.registry import subscriptions
from broadcaster.settings import get_settings


class Command(BaseCommand):
    help = (
        "Consume this service's queue and re-emit each subscribed event as a local signal; --pause/--resume "
        "pause or resume every running daemon of the service (SIGUSR1 toggles one). "
        "Example: manage.py consume_signals --metrics-port 9100 (probes /healthz and /readyz, and /metrics); "
        "manage.py consume_signals --pause, later --resume. "
        "Exit codes: 0 stopped by SIGTERM/SIGINT or --max-messages, or --pause/--resume sent; "
        "1 settings or broker error, or still busy SHUTDOWN_TIMEOUT s after the stop signal; 2 bad usage."
    )

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
        parser.add_argument(
            "--metrics-port", type=int, help="serve /healthz, /readyz and /metrics (Prometheus) on this port"
        )
        command = parser.add_mutually_exclusive_group()
        command.add_argument(
            "--pause",
            action="store_true",
            help="pause every daemon of this service (messages stay queued) until --resume, then exit",
        )
        command.add_argument("--resume", action="store_true", help="resume every daemon of this service, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        log_to_stderr_unless_configured()
        try:
            settings = get_settings()
            if options["pause"] or options["resume"]:
                self._command(control.PAUSE if options["pause"] else control.RESUME)
                return
            consumer = Consumer(
                settings,
                subscriptions(),
                prefetch=options["prefetch"],
                max_messages=options["max_messages"],
                concurrency=options["concurrency"],
            )
            stop_on_signals("consume_signals", consumer.stop, settings.shutdown_timeout)
            toggle_on_sigusr1(consumer.control.request_toggle)
            if options["metrics_port"] is not None:
                probes.serve(options["metrics_port"], consumer.live, consumer.ready)
            freeze_startup_objects()
            consumer.run()
        except BroadcasterError as exc:
            raise CommandError(f"consume_signals: {exc}") from exc

    def _command(self, command: str) -> None:
        settings = get_settings()
        reached = control.send_command(settings, command)
        done = "paused until --resume" if command == control.PAUSE else "resumed"
        running = "" if reached else " (no daemon is running now; those that start will see it)"
        self.stdout.write(f"consume_signals: the daemons of {settings.service_name} are {done}{running}")

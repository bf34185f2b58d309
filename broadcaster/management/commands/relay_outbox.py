"""`manage.py relay_outbox`: publish the transactional outbox (PUBLISH_MODE = "outbox")."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from broadcaster import probes
from broadcaster.daemon import freeze_startup_objects, log_to_stderr_unless_configured, stop_on_signals
from broadcaster.exceptions import BroadcasterError
from broadcaster.outbox import Relay
from broadcaster.settings import get_settings

logger = logging.getLogger("broadcaster.outbox")


class Command(BaseCommand):
    help = (
        "Publish unpublished outbox rows to the broker, once (--once) or until stopped. "
        "Example: manage.py relay_outbox --metrics-port 9101 (probes /healthz and /readyz, and /metrics). "
        "Exit codes: 0 stopped by SIGTERM/SIGINT, or --once done; 1 settings or broker error, or still busy "
        "SHUTDOWN_TIMEOUT s after the stop signal; 2 bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="publish what is waiting, then exit")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias of the outbox")
        parser.add_argument(
            "--metrics-port", type=int, help="serve /healthz, /readyz and /metrics (Prometheus) on this port"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        log_to_stderr_unless_configured()
        try:
            settings = get_settings()
            relay = Relay(settings, using=options["database"])
            if options["once"]:
                self._once(relay)
                return
            stop = threading.Event()
            stop_on_signals("relay_outbox", stop.set, settings.shutdown_timeout)
            if options["metrics_port"] is not None:
                live, ready = relay_probes(relay, stop)
                probes.serve(options["metrics_port"], live, ready)
            logger.info("relay_outbox: started database=%s broker=%s", relay.using, settings.redacted_broker_url)
            freeze_startup_objects()
            relay.run(stop)
            logger.info("relay_outbox: stopped after publishing %d event(s)", relay.published)
        except BroadcasterError as exc:
            raise CommandError(f"relay_outbox: {exc}") from exc

    def _once(self, relay: Relay) -> None:
        try:
            published = relay.run_once()
        finally:
            relay.close()
        self.stdout.write(f"relay_outbox: published {published} event(s) from database {relay.using!r}")


def relay_probes(relay: Relay, stop: threading.Event) -> tuple[probes.Probe, probes.Probe]:
    """/healthz: the relay's loop turns (its longest wait is the back-off after failures);
    /readyz: its last round reached the database and the broker."""
    settings = relay.settings
    stuck_after = settings.outbox_poll_interval * 30 + settings.publish_timeout + 60

    def live() -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - relay.turned
        return not stop.is_set() and since < stuck_after, {"loop_seconds_ago": round(since, 1)}

    def ready() -> tuple[bool, dict[str, Any]]:
        return not stop.is_set() and not relay.failing, {"failing": relay.failing, "published": relay.published}

    return live, ready

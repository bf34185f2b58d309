"""`manage.py relay_outbox`: publish the transactional outbox (PUBLISH_MODE = "outbox")."""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from broadcaster import observability
from broadcaster.daemon import log_to_stderr_unless_configured, stop_on_signals
from broadcaster.exceptions import BroadcasterError
from broadcaster.outbox import Relay
from broadcaster.settings import get_settings

logger = logging.getLogger("broadcaster.outbox")


class Command(BaseCommand):
    help = "Publish unpublished outbox rows to the broker, once (--once) or until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="publish what is waiting, then exit")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias of the outbox")
        parser.add_argument("--metrics-port", type=int, help="serve /metrics (Prometheus) and /healthz on this port")

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
                observability.serve(options["metrics_port"], lambda: not stop.is_set())
            logger.info("relay_outbox: started database=%s broker=%s", relay.using, settings.redacted_broker_url)
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

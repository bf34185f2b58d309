"""`manage.py broadcast_backfill app_label.Model --event TYPE`: publish existing rows as events.

Exit codes: 0 every row published and taken by a queue; 1 an error (unknown model, event
or field, broker refused or unreachable), with the primary key to resume after; 2 bad
usage; 3 every row published but some events reached no queue (no subscriber yet).
"""

from __future__ import annotations

import time
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldError, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import backfill
from broadcaster.exceptions import BroadcasterError
from broadcaster.management.options import positive
from broadcaster.settings import get_settings

DEFAULT_BATCH = 500
EXIT_UNROUTED = 3
_BAR = 30


class Command(BaseCommand):
    help = (
        "Publish the current state of existing rows of a model through its registered broadcast (the same "
        "schema and key, marked ce-backfill: true), a batch at a time in primary-key order. "
        "Example: manage.py broadcast_backfill orders.Order --event orders.order_saved --filter status=paid "
        "--target invoicing. Resume an interrupted run with --after, the last primary key it printed. "
        "Exit codes: 0 done; 1 error; 2 bad usage; 3 done, but some events reached no queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="the model whose rows to publish, as app_label.Model")
        parser.add_argument("--event", required=True, help="the event type its broadcast publishes")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="only rows matching (queryset filter syntax, field__lookup=value too); repeatable",
        )
        parser.add_argument("--batch", type=positive, default=DEFAULT_BATCH, help=f"rows per batch ({DEFAULT_BATCH})")
        parser.add_argument("--after", help="resume: only rows with a primary key above this one")
        parser.add_argument(
            "--target", metavar="SERVICE", help="send to this service's queue only, not to every subscriber"
        )
        parser.add_argument("--database", default="default", help="the database to read the rows from")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = apps.get_model(options["model"])
        except (LookupError, ValueError) as exc:
            raise CommandError(f"broadcast_backfill: {options['model']!r} is not an installed model: {exc}") from exc
        run: backfill.Backfill | None = None
        try:
            settings = get_settings()
            broadcast = backfill.broadcast_for(model, options["event"])
            queryset = model._default_manager.using(options["database"]).filter(**backfill.filters(options["filter"]))
            total = queryset.count() if options["after"] is None else queryset.filter(pk__gt=options["after"]).count()
            destination = backfill.route(settings, options["target"])
            with backfill.connect(settings, destination) as (channel, user_id):
                run = backfill.Backfill(broadcast, destination, settings, user_id)
                report = self._reporter(run, total)
                run.run(channel, queryset, batch=options["batch"], after=options["after"], report=report)
        except (FieldError, ValidationError, ValueError) as exc:
            raise CommandError(f"broadcast_backfill: bad --filter or --after: {exc}") from exc
        except BroadcasterError as exc:
            raise CommandError(f"broadcast_backfill: {exc}; {_resume(run, options['after'])}") from exc
        self._summary(run, model._meta.label, options["event"])

    def _reporter(self, run: backfill.Backfill, total: int) -> Any:
        started = time.monotonic()

        def report() -> None:
            done = min(run.published, total) if total else run.published
            share = done / total if total else 1.0
            filled = round(_BAR * share)
            rate = run.published / max(time.monotonic() - started, 1e-6)
            self.stderr.write(
                f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total} {share:4.0%} {rate:.0f}/s "
                f"last pk {run.last_pk} (resume with --after {run.last_pk})"
            )

        return report

    def _summary(self, run: backfill.Backfill, label: str, event: str) -> None:
        where = f"service {run.route.target!r}" if run.route.target else f"exchange {run.route.exchange!r}"
        self.stdout.write(
            f"published {run.published} {event} event(s) of {label} to {where}; last primary key {run.last_pk}"
        )
        if run.unrouted:
            self.stdout.write(
                f"{run.unrouted} of them reached no queue: no service subscribes to {event} yet "
                "(broadcaster_topology --apply in the consumer's release step binds it)"
            )
            raise SystemExit(EXIT_UNROUTED)


def _resume(run: backfill.Backfill | None, after: str | None) -> str:
    last = after if run is None else run.last_pk
    if last is None:
        return "nothing was published; run it again as it was"
    return f"every row up to primary key {last} was published; resume with --after {last}"

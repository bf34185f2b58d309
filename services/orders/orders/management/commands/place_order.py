"""`manage.py place_order --email E --line SKU:QTY [--line ...] [--rollback]`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import broadcaster
from broadcaster.models import OutboxEvent
from broadcaster.settings import get_settings
from orders.checkout import RolledBack, UnknownSku, place_order


def parse_line(text: str) -> tuple[str, int]:
    """`MUG:2` -> ("MUG", 2)."""
    sku, _, quantity = text.partition(":")
    if not sku.strip() or not quantity.strip().isdigit() or int(quantity) < 1:
        raise argparse.ArgumentTypeError(f"expected SKU:QUANTITY with a quantity of 1 or more, got {text!r}")
    return sku.strip().upper(), int(quantity)


class Command(BaseCommand):
    help = "Place an order; orders.order_placed and orders.order_saved go out when it commits."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument(
            "--line",
            dest="lines",
            action="append",
            type=parse_line,
            required=True,
            metavar="SKU:QTY",
            help="an order line; repeat for more lines",
        )
        parser.add_argument(
            "--rollback",
            action="store_true",
            help="send the signal, then roll the transaction back: nothing is published",
        )

    def handle(self, *args: Any, email: str, lines: list[tuple[str, int]], **options: Any) -> None:
        outbox = get_settings().publish_mode == "outbox"
        before = _last_outbox_id() if outbox else 0
        try:
            order = place_order(email, lines, rollback=options["rollback"])
        except UnknownSku as exc:
            raise CommandError(str(exc)) from exc
        except RolledBack as exc:
            self.stdout.write(f"order #{exc.order_id} rolled back: nothing was stored and nothing published")
            return
        # The process would flush at exit too; flushing here reports a broker problem
        # as this command's failure instead of a warning after it "succeeded".
        try:
            broadcaster.flush(timeout=10)
        except broadcaster.PublishError as exc:
            raise CommandError(f"order #{order.pk} is stored, but its events were not published: {exc}") from exc
        if options["verbosity"] == 0:
            self.stdout.write(str(order.pk))  # for scripts: `-v 0` prints the id alone
        elif outbox:
            self.stdout.write(f"order #{order.pk} placed: total {order.total}, {_outbox_outcome(before)}")
        else:
            self.stdout.write(f"order #{order.pk} placed: total {order.total}, published")


def _last_outbox_id() -> int:
    return OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _outbox_outcome(before: int, wait: float = 10.0) -> str:
    """What became of this order's outbox rows: published by the relay within `wait` seconds, or not yet.

    In outbox mode the events are rows until a relay publishes them (this process's
    relay thread, woken by the commit, or `manage.py relay_outbox`): say which.
    """
    rows = OutboxEvent.objects.filter(id__gt=before)
    deadline = time.monotonic() + wait
    while (waiting := rows.filter(published_at__isnull=True).count()) and time.monotonic() < deadline:
        time.sleep(0.1)
    total = rows.count()
    if not waiting:
        return f"{total} event(s) published from the outbox"
    return (
        f"{total} event(s) in the outbox, {waiting} not published yet: "
        "a relay must run to publish them (manage.py relay_outbox)"
    )

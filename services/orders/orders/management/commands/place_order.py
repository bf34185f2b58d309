"""`manage.py place_order --email E --line SKU:QTY [--line ...] [--rollback]`."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import broadcaster
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
        else:
            self.stdout.write(f"order #{order.pk} placed: total {order.total}, published")

"""`manage.py seed_stock [--item SKU:ON_HAND:THRESHOLD ...]`: put stock on the shelves."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from inventory.models import StockItem

# The SKUs the orders service sells (orders.checkout.PRICES).
DEFAULT_STOCK = [("MUG", 100, 10), ("TEE", 40, 10), ("POSTER", 12, 5)]


def parse_item(text: str) -> tuple[str, int, int]:
    """`POSTER:12:5` -> ("POSTER", 12, 5)."""
    try:
        sku, on_hand, threshold = text.split(":")
        return sku.strip().upper(), int(on_hand), int(threshold)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SKU:ON_HAND:THRESHOLD, got {text!r}") from None


class Command(BaseCommand):
    help = "Set the stock of a few SKUs (idempotent; existing reservations are kept)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--item",
            dest="items",
            action="append",
            type=parse_item,
            metavar="SKU:ON_HAND:THRESHOLD",
            help=f"default: {' '.join(':'.join(map(str, item)) for item in DEFAULT_STOCK)}",
        )

    def handle(self, *args: Any, items: list[tuple[str, int, int]] | None, **options: Any) -> None:
        for sku, on_hand, threshold in items or DEFAULT_STOCK:
            StockItem.objects.update_or_create(sku=sku, defaults={"on_hand": on_hand, "low_threshold": threshold})
            self.stdout.write(f"{sku}: {on_hand} on hand, low below {threshold}")

"""`manage.py show_state [--json]`: the stock levels and the reservations made so far."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand

from inventory.models import OrderReplica, Reservation, StockItem


def current_state() -> dict[str, list[dict[str, Any]]]:
    stock = [
        {
            "sku": item.sku,
            "on_hand": item.on_hand,
            "reserved": item.reserved,
            "available": item.available,
            "low_threshold": item.low_threshold,
        }
        for item in StockItem.objects.order_by("sku")
    ]
    reservations = [
        dict(row) for row in Reservation.objects.order_by("pk").values("order_id", "sku", "quantity", "envelope_id")
    ]
    orders = [dict(row) for row in OrderReplica.objects.order_by("order_id").values("order_id", "status", "revision")]
    return {"stock": stock, "reservations": reservations, "orders": orders}


class Command(BaseCommand):
    help = "Print the stock levels and reservations."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        state = current_state()
        if options["json"]:
            self.stdout.write(json.dumps(state, indent=2))
            return
        self.stdout.write("stock:")
        for item in state["stock"]:
            low = "  LOW" if item["available"] < item["low_threshold"] else ""
            self.stdout.write(
                f"  {item['sku']:<8} {item['available']:>4} available"
                f" ({item['on_hand']} on hand, {item['reserved']} reserved){low}"
            )
        self.stdout.write(f"reservations: {len(state['reservations'])}")
        for r in state["reservations"]:
            self.stdout.write(f"  order #{r['order_id']}: {r['quantity']} x {r['sku']} (event {r['envelope_id']})")

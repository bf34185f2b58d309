"""`manage.py cancel_order ID`: cancel an order; orders.order_saved goes out when it commits."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from orders.models import Order


class Command(BaseCommand):
    help = "Cancel an order: its status becomes 'cancelled' and a new snapshot is published. Example: cancel_order 7"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("order_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            order = Order.objects.select_for_update().filter(pk=options["order_id"]).first()
            if order is None:
                raise CommandError(f"no order #{options['order_id']}")
            order.status = Order.Status.CANCELLED
            order.save(update_fields=["status"])
        self.stdout.write(f"order #{order.pk} cancelled (revision {order.revision})")

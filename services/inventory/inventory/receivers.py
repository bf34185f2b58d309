"""What the inventory service does when an order is placed in the orders service."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import receiver

import broadcaster
from inventory.models import OrderReplica, Reservation, StockItem
from inventory.signals import order_placed_remote, order_saved_remote, stock_low, stock_reserved
from schemas import OrderLine, OrderSnapshot

logger = logging.getLogger(__name__)


@receiver(order_placed_remote, dispatch_uid="inventory.reserve_stock")
def reserve_stock(
    sender: object,
    *,
    envelope: broadcaster.Envelope,
    order_id: int,
    lines: list[OrderLine],
    **kwargs: Any,
) -> None:
    """Reserve every line of the order, all or nothing.

    The signals sent here are published when the transaction commits, with this
    envelope as their cause; if a line fails, nothing is reserved or published and
    the event is retried. A redelivered event never gets here: the subscription's
    inbox (inbox=True in apps.py) records the envelope id in this same transaction.
    """
    with transaction.atomic():
        for line in lines:
            reserve_line(envelope.id, order_id, line)


def reserve_line(envelope_id: str, order_id: int, line: OrderLine) -> None:
    item = StockItem.objects.select_for_update().filter(sku=line.sku).first()
    if item is None:
        logger.warning("order #%s: unknown SKU %s, nothing reserved", order_id, line.sku)
        return
    item.reserved += line.quantity
    item.save(update_fields=["reserved"])
    Reservation.objects.create(order_id=order_id, sku=line.sku, quantity=line.quantity, envelope_id=envelope_id)
    logger.info("order #%s: reserved %s x %s, %s left", order_id, line.quantity, line.sku, item.available)
    stock_reserved.send(
        sender=StockItem,
        order_id=order_id,
        sku=line.sku,
        quantity=line.quantity,
        remaining=item.available,
    )
    if item.available < item.low_threshold:
        stock_low.send(sender=StockItem, sku=item.sku, remaining=item.available, threshold=item.low_threshold)


@receiver(order_saved_remote, dispatch_uid="inventory.replicate_order")
def replicate_order(sender: object, *, instance: OrderSnapshot, **kwargs: Any) -> None:
    """Keep the replica of one order at the newest snapshot (the guard skipped older ones)."""
    OrderReplica.objects.update_or_create(
        order_id=instance.id,
        defaults={"status": instance.status, "total": instance.total, "revision": instance.revision},
    )

"""What the notifications service does with the events it receives."""

from __future__ import annotations

import logging
import os
import socket
from decimal import Decimal
from typing import Any

from django.dispatch import receiver

import broadcaster
from notifications.models import Notification
from notifications.signals import order_placed_remote
from schemas import OrderLine, OrderSnapshot

logger = logging.getLogger(__name__)

OPERATIONS = "ops@example.com"


def notify(envelope: broadcaster.Envelope, recipient: str, message: str) -> None:
    """Store one notification per event: a redelivered event changes nothing."""
    _, created = Notification.objects.get_or_create(
        envelope_id=envelope.id,
        defaults={
            "event_type": envelope.type,
            "causation_id": envelope.causation_id or "",
            "source": envelope.source,
            "recipient": recipient,
            "message": message,
            "handled_by": f"{socket.gethostname()}:{os.getpid()}",
        },
    )
    if created:
        logger.info("%s -> %s: %s", envelope.type, recipient, message)
    else:
        logger.info("%s %s already stored (redelivered event)", envelope.type, envelope.id)


@receiver(order_placed_remote, dispatch_uid="notifications.confirm_order")
def confirm_order(
    sender: object,
    *,
    envelope: broadcaster.Envelope,
    order_id: int,
    customer_email: str,
    lines: list[OrderLine],
    total: Decimal,
    **kwargs: Any,
) -> None:
    items = sum(line.quantity for line in lines)
    units = "item" if items == 1 else "items"
    notify(envelope, customer_email, f"Thank you! Order #{order_id} ({items} {units}, {total}).")


def alert_stock_low(
    sender: object, *, envelope: broadcaster.Envelope, sku: str, remaining: int, threshold: int, **kwargs: Any
) -> None:
    notify(envelope, OPERATIONS, f"{sku} is low: {remaining} left (threshold {threshold}).")


def record_order_saved(
    sender: object, *, envelope: broadcaster.Envelope, instance: OrderSnapshot, created: bool, **kwargs: Any
) -> None:
    verb = "created" if created else "updated"
    notify(envelope, OPERATIONS, f"Order #{instance.id} {verb}: {instance.status}, {instance.total}.")

"""Placing an order: the one place the orders service sends `order_placed`."""

from __future__ import annotations

from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db import transaction

from orders.models import Order, OrderLine
from orders.signals import order_placed

# The shop's catalogue; the inventory service's `seed_stock` stocks the same SKUs.
PRICES = {
    "MUG": Decimal("12.50"),
    "TEE": Decimal("19.00"),
    "POSTER": Decimal("7.25"),
}


class UnknownSku(ValueError):
    """An order line names a SKU the catalogue does not sell."""


class RolledBack(Exception):
    """Raised inside `place_order(rollback=True)` to abandon the transaction."""

    def __init__(self, order_id: int) -> None:
        self.order_id = order_id
        super().__init__(f"order #{order_id} rolled back on request")


def place_order(email: str, lines: list[tuple[str, int]], *, rollback: bool = False) -> Order:
    """Create an order with its lines and send `order_placed`, all in one transaction.

    broadcaster publishes `orders.order_placed` and `orders.order_saved` only once this
    transaction commits. With `rollback=True` the transaction is abandoned after the
    signal was sent (RolledBack is raised), so nothing is stored and nothing published.
    """
    with transaction.atomic():
        order = _store(email, lines)
        order_placed.send(
            sender=Order,
            order_id=order.pk,
            customer_email=order.customer_email,
            lines=list(order.lines.all()),
            total=order.total,
            placed_at=order.created_at,
        )
        if rollback:
            raise RolledBack(order.pk)
    return order


async def aplace_order(email: str, lines: list[tuple[str, int]]) -> Order:
    """`place_order` for async views: store the order, then ``await order_placed.asend(...)``.

    The transaction runs in a worker thread (Django's ORM is synchronous) and has
    committed when the signal is sent, so broadcaster publishes at once; the event loop
    goes on serving other requests meanwhile.
    """
    order = await sync_to_async(_store_atomically)(email, lines)
    await order_placed.asend(
        sender=Order,
        order_id=order.pk,
        customer_email=order.customer_email,
        lines=[line async for line in order.lines.all()],
        total=order.total,
        placed_at=order.created_at,
    )
    return order


def _store(email: str, lines: list[tuple[str, int]]) -> Order:
    unknown = sorted({sku for sku, _ in lines} - PRICES.keys())
    if unknown:
        raise UnknownSku(f"unknown SKU(s): {', '.join(unknown)}")
    total = sum((PRICES[sku] * quantity for sku, quantity in lines), Decimal("0.00"))
    order = Order.objects.create(customer_email=email, total=total)
    OrderLine.objects.bulk_create(
        OrderLine(order=order, sku=sku, quantity=quantity, unit_price=PRICES[sku]) for sku, quantity in lines
    )
    return order


@transaction.atomic
def _store_atomically(email: str, lines: list[tuple[str, int]]) -> Order:
    return _store(email, lines)

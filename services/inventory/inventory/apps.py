"""Wires the inventory service's signals to the broker."""

from django.apps import AppConfig

import broadcaster
from schemas import OrderPlaced, OrderSaved, StockLow, StockReserved


class InventoryConfig(AppConfig):
    name = "inventory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inventory import receivers  # noqa: F401 (connects the receivers)
        from inventory.signals import order_placed_remote, order_saved_remote, stock_low, stock_reserved

        # inbox=True: the reservation, the events it fires and the record of this event id
        # commit together, so a redelivered order_placed reserves nothing twice.
        broadcaster.subscribe("orders.order_placed", schema=OrderPlaced, signal=order_placed_remote, inbox=True)
        # A replica of the orders: ordered by order id, and a snapshot older than the one
        # applied (its revision) is skipped, so replays and redeliveries never go back in time.
        broadcaster.subscribe(
            "orders.order_saved",
            schema=OrderSaved,
            signal=order_saved_remote,
            ordered=True,
            version_field="instance.revision",
        )
        broadcaster.broadcast(stock_reserved, event="inventory.stock_reserved", schema=StockReserved)
        broadcaster.broadcast(stock_low, event="inventory.stock_low", schema=StockLow)

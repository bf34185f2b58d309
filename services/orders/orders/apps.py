"""Wires the orders service's signals to the broker."""

from django.apps import AppConfig
from django.db.models.signals import post_save

import broadcaster
from schemas import OrderPlaced, OrderSaved


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.signals import order_placed

        broadcaster.broadcast(order_placed, event="orders.order_placed", schema=OrderPlaced)
        # A model signal: every saved Order goes out as an OrderSaved snapshot, keyed by the
        # order's id, so that a service subscribing with ordered=True gets one order's
        # snapshots in the order they were saved.
        broadcaster.broadcast(
            post_save, sender="orders.Order", event="orders.order_saved", schema=OrderSaved, key="instance.id"
        )

"""Subscribes the notifications service to the events it reacts to."""

from django.apps import AppConfig

import broadcaster
from schemas import OrderPlaced, OrderSaved, StockLow


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifications import receivers
        from notifications.signals import order_placed_remote

        # With `signal=`: re-emit into a signal this service declares (see signals.py),
        # its receivers connected with @receiver.
        broadcaster.subscribe("orders.order_placed", schema=OrderPlaced, signal=order_placed_remote)
        # Without it, subscribe() makes the Signal and returns it.
        stock_low = broadcaster.subscribe("inventory.stock_low", schema=StockLow)
        stock_low.connect(receivers.alert_stock_low, dispatch_uid="notifications.stock_low")
        order_saved = broadcaster.subscribe("orders.order_saved", schema=OrderSaved)
        order_saved.connect(receivers.record_order_saved, dispatch_uid="notifications.order_saved")

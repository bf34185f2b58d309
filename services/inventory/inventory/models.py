"""Stock levels and the reservations made against them."""

from django.db import models


class StockItem(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    low_threshold = models.PositiveIntegerField(default=5)

    @property
    def available(self) -> int:
        """What can still be promised; negative when orders were taken beyond the stock."""
        return self.on_hand - self.reserved

    def __str__(self) -> str:
        return f"{self.sku}: {self.available} available"


class OrderReplica(models.Model):
    """The orders service's orders as inventory last heard of them (orders.order_saved).

    The subscription is ordered and versioned: one order's snapshots are applied one at a
    time, in the order they were saved, and an older snapshot (a replay) never overwrites
    a newer one.
    """

    order_id = models.BigIntegerField(unique=True)
    status = models.CharField(max_length=20)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    revision = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"order #{self.order_id}: {self.status} (revision {self.revision})"


class Reservation(models.Model):
    order_id = models.BigIntegerField()
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    # The id of the orders.order_placed event this reservation came from: a redelivered
    # event finds its reservations already there and reserves nothing twice.
    envelope_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["envelope_id", "sku"], name="one_reservation_per_event"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku} for order #{self.order_id}"

"""Orders and their lines."""

from decimal import Decimal
from typing import Any

from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PLACED = "placed"
        CANCELLED = "cancelled"

    customer_email = models.EmailField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLACED)
    total = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0.00"))
    created_at = models.DateTimeField(auto_now_add=True)
    # One more on every save: other services replicating orders (inventory) apply a
    # snapshot only if it is newer than the one they have (version_field="instance.revision").
    revision = models.PositiveIntegerField(default=0)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.revision += 1
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "revision"}
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"order #{self.pk} ({self.customer_email}, {self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

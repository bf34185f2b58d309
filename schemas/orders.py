"""Events published by the orders service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class OrderLine(BaseModel):
    """One line of an order: how many units of which SKU.

    `from_attributes` lets a line be read straight from an ORM row.
    """

    model_config = ConfigDict(from_attributes=True)
    schema_version: ClassVar[str] = "1.0"

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class OrderPlaced(BaseModel):
    """An order was placed and committed (`orders.order_placed`).

    Sent by the orders service's own `order_placed` signal, once per order.
    """

    schema_version: ClassVar[str] = "1.0"

    order_id: int
    customer_email: str
    lines: list[OrderLine] = Field(min_length=1)
    total: Decimal = Field(ge=0)
    placed_at: datetime


class OrderSnapshot(BaseModel):
    """The fields of an `Order` row other services may rely on.

    Validated from the model instance itself (`from_attributes`), so the orders
    service's model can grow columns without changing this contract.
    """

    model_config = ConfigDict(from_attributes=True)
    schema_version: ClassVar[str] = "1.0"

    id: int
    status: str
    customer_email: str
    total: Decimal
    revision: int = 0
    """One more on every save of the order: the newest snapshot of an order is the one to keep."""


class OrderSaved(BaseModel):
    """An `Order` row was saved (`orders.order_saved`, from Django's `post_save`).

    `instance` carries the saved order and `created` whether it was an insert.
    """

    schema_version: ClassVar[str] = "1.0"

    instance: OrderSnapshot
    created: bool

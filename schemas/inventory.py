"""Events published by the inventory service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class StockReserved(BaseModel):
    """Stock of one SKU was set aside for an order (`inventory.stock_reserved`).

    `remaining` is what is left available (on hand minus reserved) afterwards.
    """

    schema_version: ClassVar[str] = "1.0"

    order_id: int
    sku: str
    quantity: int = Field(gt=0)
    remaining: int


class StockLow(BaseModel):
    """A reservation left a SKU below its low-stock threshold (`inventory.stock_low`)."""

    schema_version: ClassVar[str] = "1.0"

    sku: str
    remaining: int
    threshold: int = Field(ge=0)

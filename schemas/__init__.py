"""Event contracts shared by the example services: pure pydantic, importable without Django."""

from schemas.inventory import StockLow, StockReserved
from schemas.orders import OrderLine, OrderPlaced, OrderSaved, OrderSnapshot

__all__ = [
    "OrderLine",
    "OrderPlaced",
    "OrderSaved",
    "OrderSnapshot",
    "StockLow",
    "StockReserved",
]

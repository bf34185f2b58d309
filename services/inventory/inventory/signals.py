"""Signals of the inventory service."""

from django.dispatch import Signal

# Re-emitted by `consume_signals` for every `orders.order_placed` event.
# sender: schemas.OrderPlaced
# kwargs: envelope (broadcaster.Envelope), order_id (int), customer_email (str),
#         lines (list[schemas.OrderLine]), total (Decimal), placed_at (datetime)
order_placed_remote = Signal()

# Sent when stock of one SKU was reserved for an order; broadcast as inventory.stock_reserved.
# sender: inventory.models.StockItem
# kwargs: order_id (int), sku (str), quantity (int), remaining (int: available afterwards)
stock_reserved = Signal()

# Sent when a reservation leaves a SKU below its threshold; broadcast as inventory.stock_low.
# sender: inventory.models.StockItem
# kwargs: sku (str), remaining (int), threshold (int)
stock_low = Signal()

# Re-emitted for every `orders.order_saved` event, one order's snapshots in order.
# sender: schemas.OrderSaved
# kwargs: envelope (broadcaster.Envelope), instance (schemas.OrderSnapshot), created (bool)
order_saved_remote = Signal()

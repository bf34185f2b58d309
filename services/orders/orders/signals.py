"""Signals the orders service sends; apps.py broadcasts them to other services."""

from django.dispatch import Signal

# Sent inside the transaction that creates an order, once its lines exist.
# sender: the Order class
# kwargs: order_id (int), customer_email (str), lines (OrderLine rows: sku, quantity),
#         total (Decimal), placed_at (datetime)
order_placed = Signal()

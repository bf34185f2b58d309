"""Signals of the notifications service."""

from django.dispatch import Signal

# Re-emitted by `consume_signals` for every `orders.order_placed` event.
# sender: schemas.OrderPlaced
# kwargs: envelope (broadcaster.Envelope), order_id (int), customer_email (str),
#         lines (list[schemas.OrderLine]), total (Decimal), placed_at (datetime)
order_placed_remote = Signal()

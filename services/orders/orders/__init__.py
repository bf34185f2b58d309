"""The orders app: orders and their lines; publishes orders.order_placed and orders.order_saved."""

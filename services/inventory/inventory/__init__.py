"""The inventory app: reserves stock for remote orders; publishes stock_reserved and stock_low."""

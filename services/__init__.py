"""Example Django services (orders, inventory, notifications) talking through broadcaster."""

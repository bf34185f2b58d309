"""Django project configuration of the inventory service."""

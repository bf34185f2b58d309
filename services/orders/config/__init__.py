"""Django project configuration of the orders service."""

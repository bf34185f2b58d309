"""Django project configuration of the notifications service."""

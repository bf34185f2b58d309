"""The notifications service has no HTTP surface: the example is driven by management commands."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

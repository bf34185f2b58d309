"""The orders service's HTTP surface: one async view (the example is otherwise driven by commands)."""

from django.urls import URLPattern, path
from orders import views

urlpatterns: list[URLPattern] = [path("orders/", views.place_order, name="place-order")]

"""The orders service's one HTTP endpoint, an async view: place an order with a JSON POST."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from orders.checkout import UnknownSku, aplace_order


async def place_order(request: HttpRequest) -> HttpResponse:
    """POST ``{"email": "...", "lines": [["MUG", 2], ...]}``: 201 with the order id.

    The order is stored in one transaction; `order_placed` then goes out through
    ``await order_placed.asend(...)``, which publishes without blocking the event loop.
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        data = json.loads(request.body)
        email, lines = str(data["email"]), [(str(sku), int(quantity)) for sku, quantity in data["lines"]]
    except (ValueError, KeyError, TypeError) as exc:
        return JsonResponse({"error": f'expected {{"email": str, "lines": [[sku, quantity], ...]}}: {exc}'}, status=400)
    try:
        order = await aplace_order(email, lines)
    except UnknownSku as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"order_id": order.pk, "total": str(order.total)}, status=201)

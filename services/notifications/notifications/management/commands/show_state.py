"""`manage.py show_state [--json]`: the notifications stored so far."""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand

from notifications.models import Notification

FIELDS = ("event_type", "envelope_id", "causation_id", "source", "recipient", "message", "handled_by")


class Command(BaseCommand):
    help = "Print the notifications, oldest first."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        notifications = list(Notification.objects.order_by("pk").values(*FIELDS))
        if options["json"]:
            self.stdout.write(json.dumps({"notifications": notifications}, indent=2))
            return
        self.stdout.write(f"notifications: {len(notifications)}")
        for n in notifications:
            cause = f" (caused by {n['causation_id']})" if n["causation_id"] else ""
            self.stdout.write(f"  {n['event_type']} -> {n['recipient']}: {n['message']}{cause}")

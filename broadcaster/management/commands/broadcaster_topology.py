"""`manage.py broadcaster_topology [--permissions]`: what this service uses on the broker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster.exceptions import BroadcasterError
from broadcaster.permissions import permission_commands, topology_lines
from broadcaster.registry import broadcasts, subscriptions
from broadcaster.settings import get_settings


class Command(BaseCommand):
    help = (
        "Print this service's exchange, queues and bindings; with --permissions, the rabbitmqctl commands "
        "that give it a broker user restricted to them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--permissions", action="store_true", help="print rabbitmqctl commands instead of the topology"
        )
        parser.add_argument("--user", help="name of the broker user (default: SERVICE_NAME)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            settings = get_settings()
        except BroadcasterError as exc:
            raise CommandError(f"broadcaster_topology: {exc}") from exc
        # Nothing here talks to the broker: it only reads the settings and the registry.
        publishes = [receiver.event for receiver in broadcasts()]
        subscribes = list(subscriptions())
        per_instance = [event for event, sub in subscriptions().items() if sub.fanout == "instance"]
        ordered = [event for event, sub in subscriptions().items() if sub.ordered]
        if options["permissions"]:
            lines = permission_commands(
                settings, publishes, subscribes, options["user"], per_instance, ordered_events=ordered
            )
        else:
            lines = topology_lines(settings, publishes, subscribes, per_instance, ordered)
        self.stdout.write("\n".join(lines))

"""`manage.py broadcaster_topology`: show, apply, check or prune this service's broker objects.

Exit codes: 0 done (or, with --check, no difference); 1 --check found differences, or
--prune was declined; 2 bad usage; 3 the broker, its management API or the settings
failed (nothing was compared or changed past that point).
"""

from __future__ import annotations

import sys
from typing import Any

import pika
import pika.exceptions
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broadcaster import connection, pikacompat
from broadcaster.brokerstate import Difference, ManagementApi, compare
from broadcaster.exceptions import CONNECTION_LOST, BroadcasterError
from broadcaster.permissions import permission_commands, topology_lines, vhost
from broadcaster.registry import broadcasts, subscriptions
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.topology import Binding, ServiceQueues, declare_service, plan

EXIT_DIFFERENCES = 1
EXIT_ERROR = 3


class Command(BaseCommand):
    help = (
        "Print this service's exchange, queues and bindings (or, with --permissions, the rabbitmqctl commands "
        "for a broker user restricted to them); --apply declares them, --check compares them with the broker, "
        "--prune removes bindings the code no longer has. "
        "Example, in a release step before any daemon starts: manage.py broadcaster_topology --apply. "
        "Exit codes: 0 done or no difference; 1 --check found differences or --prune was declined; 2 bad usage; "
        "3 broker, management API or settings error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--permissions", action="store_true", help="print rabbitmqctl commands instead of the topology"
        )
        mode.add_argument("--apply", action="store_true", help="declare the exchange, queues and bindings (idempotent)")
        mode.add_argument(
            "--check", action="store_true", help="list differences with the broker; exit 1 if there is any"
        )
        mode.add_argument("--prune", action="store_true", help="remove bindings the code no longer has")
        parser.add_argument("--user", help="name of the broker user (default: SERVICE_NAME)")
        parser.add_argument("--yes", action="store_true", help="with --prune: do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            settings = get_settings()
            if options["apply"]:
                self._apply(settings)
            elif options["check"]:
                self._check(settings)
            elif options["prune"]:
                self._prune(settings, confirmed=options["yes"])
            else:
                self._print(settings, permissions=options["permissions"], user=options["user"])
        except BroadcasterError as exc:
            raise CommandError(f"broadcaster_topology: {exc}", returncode=EXIT_ERROR) from exc

    def _print(self, settings: BroadcasterSettings, *, permissions: bool, user: str | None) -> None:
        # Nothing here talks to the broker: it only reads the settings and the registry.
        publishes = [receiver.event for receiver in broadcasts()]
        subscribes = list(subscriptions())
        queues = ServiceQueues.for_subscriptions(settings, subscriptions())
        per_instance, ordered = list(queues.instance_events), list(queues.ordered)
        if permissions:
            lines = permission_commands(settings, publishes, subscribes, user, per_instance, ordered_events=ordered)
        else:
            lines = topology_lines(settings, publishes, subscribes, per_instance, ordered)
        self.stdout.write("\n".join(lines))

    def _apply(self, settings: BroadcasterSettings) -> None:
        expected = plan(settings, subscriptions())
        with _BrokerChannel(settings) as channel:
            declare_service(channel, settings, subscriptions())
        self.stdout.write(
            f"declared {len(expected.exchanges)} exchange(s), {len(expected.queues)} queue(s) and "
            f"{len(expected.bindings)} binding(s) on {settings.redacted_broker_url}"
        )

    def _differences(self, settings: BroadcasterSettings) -> list[Difference]:
        return compare(plan(settings, subscriptions()), ManagementApi(settings, vhost(settings)))

    def _check(self, settings: BroadcasterSettings) -> None:
        differences = self._differences(settings)
        for difference in differences:
            self.stdout.write(str(difference))
        if differences:
            self.stdout.write(
                f"{len(differences)} difference(s); `broadcaster_topology --apply` declares what is missing, "
                "`--prune` removes extra bindings (a changed queue must be deleted and declared again)"
            )
            sys.exit(EXIT_DIFFERENCES)
        self.stdout.write("the broker matches the code")

    def _prune(self, settings: BroadcasterSettings, *, confirmed: bool) -> None:
        extra = [d.binding for d in self._differences(settings) if d.binding is not None]
        if not extra:
            self.stdout.write("no binding to prune")
            return
        self.stdout.write(f"{len(extra)} binding(s) the code no longer has:")
        for binding in extra:
            self.stdout.write(f"  {binding}")
        if not confirmed and not self._confirm():
            self.stdout.write("prune cancelled; nothing removed")
            sys.exit(EXIT_DIFFERENCES)
        with _BrokerChannel(settings) as channel:
            for binding in extra:
                _unbind(channel, binding)
        self.stdout.write(f"removed {len(extra)} binding(s)")

    def _confirm(self) -> bool:
        if not _interactive():
            raise CommandError(
                "broadcaster_topology: refusing to prune without confirmation: stdin is not a terminal; pass --yes"
            )
        self.stdout.write("Remove them? Events with these routing keys stop reaching these queues. [y/N] ", ending="")
        self.stdout.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")


class _BrokerChannel:
    """A blocking channel as the service's broker user; errors become CommandError without the password."""

    def __init__(self, settings: BroadcasterSettings) -> None:
        self._settings = settings
        self._connection: pika.BlockingConnection | None = None

    def __enter__(self) -> Any:
        try:
            self._connection = pikacompat.blocking_connection(connection.parameters(self._settings, "topology"))
            return self._connection.channel()
        except CONNECTION_LOST as exc:
            raise CommandError(self._message("cannot connect to", exc), returncode=EXIT_ERROR) from exc

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        if self._connection is not None:
            connection.close_quietly(self._connection)
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            raise CommandError(
                f"broadcaster_topology: the broker refused a declaration ({exc.reply_code}: {exc.reply_text}); "
                "a queue or exchange whose arguments changed must be deleted and declared again, or changed "
                "with a policy (see the operations guide)",
                returncode=EXIT_ERROR,
            ) from exc
        if isinstance(exc, CONNECTION_LOST):
            raise CommandError(self._message("lost the connection to", exc), returncode=EXIT_ERROR) from exc

    def _message(self, what: str, exc: BaseException) -> str:
        where = self._settings.redacted_broker_url
        return f"broadcaster_topology: {what} the broker at {where}: {connection.describe(exc)}"


def _unbind(channel: Any, binding: Binding) -> None:
    if binding.destination_type == "queue":
        channel.queue_unbind(binding.destination, binding.source, routing_key=binding.routing_key)
    else:
        channel.exchange_unbind(binding.destination, binding.source, routing_key=binding.routing_key)


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False

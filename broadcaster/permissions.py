"""The broker objects of this service, and the least RabbitMQ permissions it needs.

`topology_lines()` describes what the daemon and the publisher declare and use;
`permission_commands()` writes the ``rabbitmqctl`` commands that give this service a
user of its own which may configure, write and read only those objects, and publish on
the exchange only the event types it broadcasts (topic permissions). On a shared
broker a compromised or misconfigured service then cannot forge another service's
events through the exchange, read another service's queue, or bind its queue to events
it did not subscribe to.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Partitions, Topology

__all__ = ["PASSWORD_PLACEHOLDER", "permission_commands", "topology_lines", "vhost"]

PASSWORD_PLACEHOLDER = "CHANGE_ME"
_NOTHING = "^$"  # matches no name this library uses: RabbitMQ reads '' as "nothing" only in set_permissions


def vhost(settings: BroadcasterSettings) -> str:
    """The virtual host of BROKER_URL (``/`` when the URL names none)."""
    path = urlsplit(settings.broker_urls[0]).path  # every node has the same (a system check)
    return unquote(path[1:]) if len(path) > 1 else "/"


def topology_lines(
    settings: BroadcasterSettings,
    publishes: Iterable[str],
    subscribes: Iterable[str],
    instance_events: Iterable[str] = (),
    ordered_events: Iterable[str] = (),
) -> list[str]:
    """Human-readable lines naming the exchange, the queues and the bindings of this service."""
    topology = Topology.for_settings(settings)
    published, subscribed = sorted(set(publishes)), sorted(set(subscribes))
    lines = [
        f"vhost {vhost(settings)}",
        f"exchange {topology.exchange} (durable topic; routing key = event type)",
        *(f"  publishes {event}" for event in published),
    ]
    lines += _unrouted_lines(settings, topology)
    if not subscribed:
        return [*lines, "no subscriptions: no queues"]
    lines += [
        f"queue {topology.queue} ({topology.queue_type}, durable)",
        *(f"  bound to {topology.exchange} with {event}" for event in subscribed),
        *(
            f"queue {name} (retry: back to {topology.queue} after {delay:g} s)"
            for delay, name in zip(topology.retry_delays, topology.retry_queues, strict=True)
        ),
        f"queue {topology.dead_letter_queue} (dead letters, with the reason in headers)",
        f"exchange {topology.requeue_exchange} (direct; retries, dead letters and replays, to the queue named)",
        f"exchange {topology.queue}.control (fanout; --pause/--resume to every daemon, each on a queue "
        f"{topology.queue}.control.<host>-<pid>-<id>)",
        f"exchange {topology.queue}.paused (exists while the daemons are paused by --pause)",
    ]
    if per_instance := sorted(set(instance_events)):
        lines += [
            f"queue {topology.queue}.instance.<INSTANCE_ID> (one per daemon, classic, removed "
            f"{settings.instance_queue_expires:g} s after it is gone)",
            *(f"  bound to {topology.exchange} with {event}" for event in per_instance),
        ]
    if ordered := sorted(set(ordered_events)):
        partitions = Partitions.for_settings(settings)
        lines += [
            f"exchange {partitions.exchange} (consistent hash on ce-partitionkey)",
            *(f"  bound to {topology.exchange} with {event}" for event in ordered),
            f"queues {topology.queue}.partition.0 to .{partitions.count - 1} "
            f"({topology.queue_type}, single active consumer; PARTITIONS={partitions.count})",
        ]
    return lines


def permission_commands(
    settings: BroadcasterSettings,
    publishes: Iterable[str],
    subscribes: Iterable[str],
    user: str | None = None,
    instance_events: Iterable[str] = (),
    *,
    ordered_events: Iterable[str] = (),
) -> list[str]:
    """``rabbitmqctl`` commands (with comments) that create and restrict this service's user.

    The password is the placeholder PASSWORD_PLACEHOLDER. No user gets access to the
    default exchange; a service that subscribes to nothing gets no queue permissions.
    """
    topology = Topology.for_settings(settings)
    name = user or settings.service_name
    host = vhost(settings)
    published, subscribed = sorted(set(publishes)), sorted(set(subscribes))
    exchange = _escape(topology.exchange)
    own = [exchange]
    # The daemon's queues and its requeue exchange (retries, dead letters, replays go
    # through it, never through the default exchange, which cannot be limited by routing key).
    names = [topology.queue, topology.dead_letter_queue, *topology.retry_queues, topology.requeue_exchange]
    patterns = [*map(_escape, names)] if subscribed else []
    if subscribed:  # pausing: the control exchange, one queue on it per daemon, the pause marker
        patterns += [_escape(f"{topology.queue}.control") + r"(\..+)?", _escape(f"{topology.queue}.paused")]
    if any(True for _ in instance_events):
        patterns.append(_escape(topology.queue) + r"\.instance\..+")  # one per daemon (fanout="instance")
    if any(True for _ in ordered_events):  # the partition exchange and queues of ordered subscriptions
        patterns += [
            _escape(Partitions.for_settings(settings).exchange),
            _escape(topology.queue) + r"\.partition\.[0-9]+",
        ]
    if settings.unrouted_exchange is not None and settings.unrouted_queue is not None:
        # Declaring EXCHANGE with its alternate needs read on EXCHANGE and write on the
        # alternate; binding the parking queue, read on the alternate and write on the queue.
        own += [_escape(settings.unrouted_exchange), _escape(settings.unrouted_queue)]
    configure = _anchored([*own, *patterns])
    write = _anchored([*own, *patterns])
    # Declaring a queue with a dead-letter exchange needs read on the queue, so the retry
    # queues are readable too; binding needs read on the exchange.
    read = _anchored([*own, *patterns]) if subscribed or settings.unrouted_queue is not None else _NOTHING
    return [
        f"# A broker user for service {settings.service_name!r} on vhost {host!r}: it may declare, write and read",
        f"# only exchange {topology.exchange!r} and its own queues, and publish only the events it broadcasts.",
        f"# Replace {PASSWORD_PLACEHOLDER} with a strong password; BROKER_URL (or BROADCASTER_BROKER_URL) carries it.",
        _command("add_user", name, PASSWORD_PLACEHOLDER),
        _command("set_permissions", "-p", host, name, configure, write, read),
        _command("set_topic_permissions", "-p", host, name, topology.exchange, _events(published), _events(subscribed)),
    ]


def _unrouted_lines(settings: BroadcasterSettings, topology: Topology) -> list[str]:
    alternate, queue = settings.unrouted_exchange, settings.unrouted_queue
    if alternate is None or queue is None:
        return []
    return [
        f"exchange {alternate} (fanout; alternate exchange of {topology.exchange}: what no queue takes)",
        f"queue {queue} ({topology.queue_type}, durable; UNROUTED_QUEUE)",
        f"  bound to {alternate}",
    ]


def _anchored(patterns: list[str]) -> str:
    if not patterns:
        return _NOTHING
    return "^(" + "|".join(patterns) + ")$"


def _events(events: list[str]) -> str:
    return _anchored([_escape(event) for event in events])


def _escape(name: str) -> str:
    # Names and events are letters, digits, '_', '-' and '.' (settings and registry check
    # it), and of those only the dot means something in a regular expression.
    return name.replace(".", r"\.")


def _command(*args: str) -> str:
    return " ".join(["rabbitmqctl", *(shlex.quote(arg) for arg in args)])

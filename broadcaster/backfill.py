"""Backfill: publish the current state of existing rows through a model's registered broadcast.

What ``manage.py broadcast_backfill`` does. Each row becomes the event its broadcast
would send on a save (``created`` False), with the same schema, key and signature and
one more attribute, ``ce-backfill: true``, so that a consumer sees an ordinary event and
an operator can tell a backfilled one in a queue or a dead-letter listing.

Rows are read in primary-key order, a batch at a time; a batch is confirmed by the broker
before the next is read, so the last primary key reported is a safe place to resume
(``--after``). Publishing is synchronous with confirms: a tool, not the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from django.db import models
from django.db.models.signals import post_save

from broadcaster import connection, pikacompat, signing
from broadcaster.envelope import JSON, OutboundMessage, properties_for
from broadcaster.exceptions import (
    CONNECTION_LOST,
    BrokerRefused,
    BrokerUnavailable,
    ConfigurationError,
    PublishError,
    Unroutable,
)
from broadcaster.producer import Broadcast
from broadcaster.registry import broadcasts
from broadcaster.settings import BroadcasterSettings

__all__ = ["MARKER", "Backfill", "Route", "broadcast_for", "connect", "filters", "route"]

MARKER = "ce-backfill"
_ACCESS_REFUSED = 403
_NOT_FOUND = 404


@dataclass(frozen=True)
class Route:
    """Where backfilled events go: EXCHANGE by event type, or one service's queue."""

    exchange: str
    routing_key: str | None  # None: the event type, as a live event
    target: str | None = None


def route(settings: BroadcasterSettings, target: str | None) -> Route:
    """To every subscriber (EXCHANGE), or with `target` to that service's queue only.

    A service's queue is reached through its requeue exchange (``<queue>.requeue``,
    routing key the queue's name), which the publishing service's broker user may not
    write to: see the operations guide for the permission it needs.
    """
    if target is None:
        return Route(settings.exchange, None)
    return Route(f"{target}.requeue", target, target)


def broadcast_for(model: type[models.Model], event: str) -> Broadcast:
    """The registered broadcast of `event` whose sender is `model`; ConfigurationError if none."""
    label = model._meta.label
    for receiver in broadcasts():
        sender = receiver.sender
        sender_label = sender if isinstance(sender, str) else getattr(getattr(sender, "_meta", None), "label", None)
        if receiver.event == event and sender_label is not None and sender_label.lower() == label.lower():
            return receiver
    known = sorted(f"{r.event} ({_label(r.sender)})" for r in broadcasts())
    raise ConfigurationError(
        f"no broadcast of event {event!r} has sender {label}; registered: {', '.join(known) or 'none'}"
    )


def _label(sender: object) -> str:
    return sender if isinstance(sender, str) else getattr(getattr(sender, "_meta", None), "label", repr(sender))


@dataclass
class Backfill:
    """One backfill run: counts as it goes, and where to resume."""

    broadcast: Broadcast
    route: Route
    settings: BroadcasterSettings
    user_id: str | None
    published: int = 0
    unrouted: int = 0
    last_pk: Any = None

    def run(
        self, channel: Any, queryset: models.QuerySet[Any], *, batch: int, after: Any, report: Callable[[], None]
    ) -> None:
        """Publish every row of `queryset` with a primary key above `after` (all if None), `batch` at a time.

        `report` is called after each confirmed batch; `last_pk` is then a safe `after`.
        """
        self.last_pk = after
        while True:
            rows = queryset.order_by("pk")
            if self.last_pk is not None:
                rows = rows.filter(pk__gt=self.last_pk)
            chunk = list(rows[:batch])
            if not chunk:
                return
            for instance in chunk:
                self._publish(channel, instance, queryset.db)
            self.last_pk = chunk[-1].pk  # each publish was confirmed: safe to resume after it
            report()

    def _publish(self, channel: Any, instance: models.Model, using: str) -> None:
        message = self.broadcast.message(type(instance), _saved(instance, using), cause=None)
        properties = self._properties(message)
        key = self.route.routing_key or message.routing_key
        try:
            channel.basic_publish(self.route.exchange, key, message.body, properties, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            if self.route.target is not None:
                raise Unroutable(
                    f"queue {self.route.target!r} does not exist or is not bound to exchange "
                    f"{self.route.exchange!r}; nothing after primary key {self.last_pk!r} was published"
                ) from exc
            self.unrouted += 1  # no service subscribes yet: said in the summary, not fatal
        except pika.exceptions.NackError as exc:
            raise PublishError(f"the broker refused the event of primary key {instance.pk!r}") from exc
        self.published += 1

    def _properties(self, message: OutboundMessage) -> pika.BasicProperties:
        headers = message.envelope.headers()
        headers[MARKER] = "true"  # signed with the rest: it is a ce- attribute
        if (key := self.settings.signing_key) is not None:
            signing.sign(headers, JSON, message.body, key)
        return properties_for(message.envelope, user_id=self.user_id, headers=headers)


def _saved(instance: models.Model, using: str) -> dict[str, Any]:
    """The kwargs post_save sends for an update of `instance`: what the broadcast's schema reads."""
    return {
        "signal": post_save,
        "instance": instance,
        "created": False,
        "raw": False,
        "using": using,
        "update_fields": None,
    }


@contextmanager
def connect(settings: BroadcasterSettings, target: Route) -> Iterator[tuple[Any, str | None]]:
    """(a blocking channel in confirm mode, the broker user) as the service; errors without the password."""
    params = connection.parameters(settings, "backfill")
    try:
        conn = pikacompat.blocking_connection(params)
    except CONNECTION_LOST as exc:
        raise BrokerUnavailable(
            f"cannot connect to the broker at {settings.redacted_broker_url}: "
            f"{connection.describe_redacted(exc, settings)}"
        ) from exc
    try:
        channel: Any = conn.channel()  # pika's stubs know only the declared exchange types
        channel.confirm_delivery()
        if target.target is None:  # as the publisher does: the exchange may not exist before the first event
            arguments = settings.exchange_arguments or None
            channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True, arguments=arguments)
        yield channel, getattr(params.credentials, "username", None)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise _refused(settings, target, exc) from exc
    except CONNECTION_LOST as exc:
        raise BrokerUnavailable(
            f"lost the connection to the broker at {settings.redacted_broker_url}: "
            f"{connection.describe_redacted(exc, settings)}"
        ) from exc
    finally:
        connection.close_quietly(conn)


def _refused(settings: BroadcasterSettings, target: Route, exc: pika.exceptions.ChannelClosedByBroker) -> BrokerRefused:
    if exc.reply_code == _ACCESS_REFUSED:
        return BrokerRefused(
            f"broker user {settings.broker_user!r} may not write to exchange {target.exchange!r} "
            f"({exc.reply_text}); a service's user may write only to its own exchanges: grant it write on "
            f"{target.exchange!r} for the backfill (see the operations guide)"
        )
    if exc.reply_code == _NOT_FOUND:
        return BrokerRefused(
            f"exchange {target.exchange!r} does not exist ({exc.reply_text}); is the service deployed?"
        )
    return BrokerRefused(f"the broker closed the channel: {exc.reply_code} {exc.reply_text}")


def filters(pairs: list[str]) -> Mapping[str, str]:
    """``field=value`` strings as queryset filter arguments; ConfigurationError naming a malformed one."""
    parsed = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise ConfigurationError(f"--filter {pair!r}: write it as field=value (field__lookup=value also works)")
        parsed[name] = value
    return parsed

"""Registers the broadcasts and subscriptions that settings.ROLE names."""

from collections.abc import Callable

from django.apps import AppConfig
from django.conf import settings

import broadcaster
from relay import events, receivers


def _producer() -> None:
    broadcaster.broadcast(events.ping, event="relay.ping", schema=events.Ping)
    broadcaster.broadcast(events.priced, event="relay.priced", schema=events.Priced)


def _consumer() -> None:
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping)
    broadcaster.subscribe("relay.priced", schema=events.Priced, signal=events.priced)
    broadcaster.subscribe("relay.boom", schema=events.Boom, signal=events.boom)
    receivers.connect(events.ping, events.priced)
    events.boom.connect(receivers.explode, weak=False, dispatch_uid="relay.explode")


def _echo() -> None:
    # Broadcasts and subscribes to the same event on the same signal.
    broadcaster.broadcast(events.ping, event="relay.ping", schema=events.Ping)
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping)
    receivers.connect(events.ping)


def _ping_to_pong() -> None:
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping)
    broadcaster.broadcast(events.pong, event="relay.pong", schema=events.Pong)
    receivers.connect(events.ping)
    events.ping.connect(receivers.answer_with_pong, weak=False, dispatch_uid="relay.answer")


def _pong_to_ping() -> None:
    broadcaster.subscribe("relay.pong", schema=events.Pong, signal=events.pong)
    broadcaster.broadcast(events.ping, event="relay.ping", schema=events.Ping)
    receivers.connect(events.pong)
    events.pong.connect(receivers.answer_with_ping, weak=False, dispatch_uid="relay.answer")


def _flaky() -> None:
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping)
    events.ping.connect(receivers.fail_at_first, weak=False, dispatch_uid="relay.fail_at_first")


def _inbox() -> None:
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping, inbox=True)
    events.ping.connect(receivers.remember, weak=False, dispatch_uid="relay.remember")


def _ordered() -> None:
    broadcaster.subscribe("relay.keyed", schema=events.Keyed, signal=events.keyed, ordered=True)
    events.keyed.connect(receivers.record_keyed, weak=False, dispatch_uid="relay.record_keyed")


def _instance() -> None:
    # ping to the service queue, as the consumer role; priced to this daemon's instance queue.
    broadcaster.subscribe("relay.ping", schema=events.Ping, signal=events.ping)
    broadcaster.subscribe("relay.priced", schema=events.Priced, signal=events.priced, fanout="instance")
    receivers.connect(events.ping, events.priced)


def _keyed_producer() -> None:
    broadcaster.broadcast(events.keyed, event="relay.keyed", schema=events.Keyed, key="key")


WIRINGS: dict[str, Callable[[], None]] = {
    "ordered": _ordered,
    "keyed-producer": _keyed_producer,
    "producer": _producer,
    "consumer": _consumer,
    "instance": _instance,
    "echo": _echo,
    "ping-to-pong": _ping_to_pong,
    "pong-to-ping": _pong_to_ping,
    "inbox": _inbox,
    "flaky": _flaky,
}


class RelayConfig(AppConfig):
    name = "relay"

    def ready(self) -> None:
        for role in filter(None, settings.ROLE.split(",")):
            WIRINGS[role]()

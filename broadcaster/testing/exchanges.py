"""RabbitMQ's routing, in memory: which queues a message published to an exchange lands in.

The exchanges, queues and bindings are the service's topology as `broadcaster.topology`
declares it (recorded in a `Plan`, the same code the daemon and ``broadcaster_topology
--apply`` run), so the test kit routes by what production declares, not by a copy of it.
Exchange types: topic (``*`` one word, ``#`` zero or more), direct, fanout, and the
consistent-hash exchange of ordered subscriptions; exchange-to-exchange bindings and an
exchange's ``alternate-exchange`` as RabbitMQ applies them.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Mapping

from broadcaster.registry import Subscription
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Binding, Plan, ServiceQueues, Topology, plan

__all__ = ["Exchanges", "service_network", "topic_matches"]

_MAX_EXCHANGE_HOPS = 16  # exchange-to-exchange bindings may form a cycle; RabbitMQ visits each once


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange routes `routing_key` along a binding with `pattern`.

    Both are dot-separated words; in the pattern ``*`` stands for exactly one word and
    ``#`` for zero or more. An empty routing key has no words (only ``#`` matches it).
    """
    return _match(_words(pattern), _words(routing_key))


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


@functools.lru_cache(maxsize=1024)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _match(rest, words[1:])


class Exchanges:
    """The exchanges and bindings of a `Plan`, able to route a message as the broker would."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Bind `queue` to `exchange` (as ``queue_bind`` does): a stale binding, or one of the test's own."""
        self.plan.queue_bind(queue, exchange, routing_key=routing_key)

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, object]) -> list[str]:
        """The queues a message published to `exchange` lands in, each once, in binding order.

        When no queue takes it, the exchange's alternate exchange (if it has one) is tried,
        as RabbitMQ does; an empty list means the broker would return or drop the message.
        """
        queues: dict[str, None] = {}
        self._route(exchange, routing_key, headers, queues, set())
        alternate = self.plan.exchanges.get(exchange, ("", {}))[1].get("alternate-exchange")
        if not queues and isinstance(alternate, str) and alternate != exchange:
            return self.route(alternate, routing_key, headers)
        return list(queues)

    def _route(
        self, exchange: str, key: str, headers: Mapping[str, object], into: dict[str, None], seen: set[str]
    ) -> None:
        if exchange in seen or len(seen) >= _MAX_EXCHANGE_HOPS or exchange not in self.plan.exchanges:
            return
        seen.add(exchange)
        for binding in self._matching(exchange, key, headers):
            if binding.destination_type == "queue":
                into.setdefault(binding.destination, None)
            else:
                self._route(binding.destination, key, headers, into, seen)

    def _matching(self, exchange: str, key: str, headers: Mapping[str, object]) -> list[Binding]:
        kind, arguments = self.plan.exchanges[exchange]
        bindings = sorted(b for b in self.plan.bindings if b.source == exchange)
        if kind == "topic":
            return [b for b in bindings if topic_matches(b.routing_key, key)]
        if kind == "direct":
            return [b for b in bindings if b.routing_key == key]
        if kind == "fanout":
            return bindings
        if kind == "x-consistent-hash":
            return _one_by_hash(bindings, headers.get(str(arguments.get("hash-header", ""))))
        raise ValueError(f"the test kit does not route through {kind!r} exchanges ({exchange})")


def service_network(
    settings: BroadcasterSettings, subscribed: Mapping[str, Subscription], extra: Iterable[tuple[str, str, str]] = ()
) -> tuple[Exchanges, dict[str, Topology]]:
    """The service's exchanges and bindings, and the queues its daemon consumes, as the daemon declares them.

    `extra` bindings (queue, exchange, routing key) are added, as ``queue_bind`` would.
    """
    if subscribed:
        queues = ServiceQueues.for_subscriptions(settings, subscribed)
        recorded = Plan()
        queues.declare(recorded)  # as the daemon does, its instance queue included
        consumed = {topology.queue: topology for topology in queues.consumed}
    else:
        recorded, consumed = plan(settings, subscribed), {}
    exchanges = Exchanges(recorded)
    for queue, exchange, key in extra:
        exchanges.bind(queue, exchange, key)
    return exchanges, consumed


def _one_by_hash(bindings: list[Binding], value: object) -> list[Binding]:
    """One binding, the same for every message with the same hash value, weighted by binding key.

    Not RabbitMQ's hash ring: which queue a key lands in differs, but, as there, one key
    always lands in the same queue while the bindings stay. A message without the
    header hashes as an empty value.
    """
    if not bindings:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = "" if value is None else str(value)
    ring = [binding for binding in bindings for _ in range(max(1, _weight(binding.routing_key)))]
    return [ring[zlib.crc32(text.encode("utf-8", "surrogatepass")) % len(ring)]]


def _weight(key: str) -> int:
    return int(key) if key.isascii() and key.isdigit() else 1

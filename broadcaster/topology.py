"""Names and declarations of the exchange and the queues of one service.

| object            | name                         | purpose                                       |
| ----------------- | ---------------------------- | --------------------------------------------- |
| exchange          | EXCHANGE                     | durable topic; routing key = event type       |
| service queue     | QUEUE (default SERVICE_NAME) | one binding per subscribed event              |
| delay queues      | <queue>.delay.<ms>ms         | TTL, then back to the queue (quorum, at least |
|                   |                              | once, whatever QUEUE_TYPE says)               |
| dead-letter queue | <queue>.dead-letter          | what can never succeed, with the reason       |
| requeue exchange  | <queue>.requeue              | direct, routing key = queue name: the way     |
|                   |                              | back for retries, dead letters and replays    |
| partition exchange| <queue>.partitions           | consistent hash on ce-partitionkey, bound to  |
|                   |                              | EXCHANGE by each ordered event                |
| partition queues  | <queue>.partition.<n>        | PARTITIONS of them, single active consumer    |
| unrouted exchange | EXCHANGE.unrouted            | fanout, alternate exchange of EXCHANGE, only  |
|                   |                              | with UNROUTED_QUEUE: to that queue            |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from broadcaster.settings import BroadcasterSettings

if TYPE_CHECKING:
    from broadcaster.registry import Subscription

__all__ = ["Binding", "Partitions", "Plan", "ServiceQueues", "Topology", "declare_service", "plan"]

_QUORUM_DELIVERY_LIMIT = 50
_KEY_HEADER = "ce-partitionkey"
# A quorum queue's own dead-lettering (expired TTL, delivery limit) is at most once unless
# asked for: the broker then keeps each message until the target queue confirmed its copy.
# Classic queues cannot do this at all, which is why delay queues are always quorum queues.
_AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
# RabbitMQ 4.0 gives quorum queues a delivery limit of 20 when none is declared, and up
# to 4.2 counts a message handed back with basic.nack(requeue) against it: `dead_letters
# list` reads the dead-letter queue that way, so the 21st listing would drop every dead
# letter (that queue dead-letters nowhere). Its limit is set out of reach instead.
_DEAD_LETTER_DELIVERY_LIMIT = 1_000_000


@dataclass(frozen=True)
class Topology:
    """The broker objects one service (or one instance of it) uses."""

    exchange: str
    queue: str
    queue_type: str
    retry_delays: tuple[float, ...]
    shared_dead_letter_queue: str | None = None  # an instance queue dead-letters to its service's
    shared_requeue_exchange: str | None = None  # ... through its service's requeue exchange
    expires_ms: int | None = None  # an instance queue goes away this long after its daemon
    single_active_consumer: bool = False  # a partition queue: one daemon at a time, in order
    # EXCHANGE's own arguments (an alternate exchange with UNROUTED_QUEUE): the broker
    # refuses a declaration whose arguments differ from the exchange's.
    exchange_arguments: tuple[tuple[str, str], ...] = ()
    unrouted_queue: str | None = None  # declared, behind the alternate exchange, with the service's objects

    @classmethod
    def for_settings(cls, settings: BroadcasterSettings) -> Topology:
        """The service's topology, shared by all its daemons."""
        return cls(
            settings.exchange,
            settings.queue_name,
            settings.queue_type,
            settings.retry_delays,
            exchange_arguments=tuple(settings.exchange_arguments.items()),
            unrouted_queue=settings.unrouted_queue,
        )

    @classmethod
    def for_instance(cls, settings: BroadcasterSettings, move: int = 0) -> Topology:
        """This daemon's own queue, for subscriptions with fanout="instance".

        `move` counts the times the daemon left its instance queue behind on a node that
        died (see `ServiceQueues.moved_instance()`): each move is a queue of a new name.
        """
        service = cls.for_settings(settings)
        return cls(
            settings.exchange,
            f"{settings.queue_name}.instance.{settings.instance_name}" + (f".moved-{move}" if move else ""),
            # Classic and durable: it expires (x-expires) once its daemon is gone. Never a
            # transient (non-durable) queue: RabbitMQ 4.3 refuses those unless exclusive.
            "classic",
            # No delay queues: x-expires counts a queue without consumers as unused however
            # many messages it holds, so they would vanish with their messages. A failing
            # instance event goes straight to the service's dead-letter queue.
            (),
            shared_dead_letter_queue=service.dead_letter_queue,
            shared_requeue_exchange=service.requeue_exchange,
            expires_ms=round(settings.instance_queue_expires * 1000),
            exchange_arguments=service.exchange_arguments,
        )

    @property
    def dead_letter_queue(self) -> str:
        """Where messages that can never succeed are kept, with the reason in headers."""
        return self.shared_dead_letter_queue or f"{self.queue}.dead-letter"

    @property
    def requeue_exchange(self) -> str:
        """The service's own direct exchange for retries, dead letters and replays.

        Routing key = the target queue's name. The daemon publishes there rather than to
        the default exchange, whose write permission RabbitMQ cannot limit by routing key:
        a service's broker user needs no access to other services' queues.
        """
        return self.shared_requeue_exchange or f"{self.queue}.requeue"

    @property
    def retry_queues(self) -> list[str]:
        """One delay queue per RETRY_DELAYS entry, in order.

        Named ``.delay.``: the ``.retry.`` queues of earlier versions were classic queues,
        whose TTL hop back to the service queue could drop a message; they drain by
        themselves and can be deleted once empty.
        """
        return [f"{self.queue}.delay.{round(delay * 1000)}ms" for delay in self.retry_delays]

    def declare(self, channel: Any, events: Iterable[str]) -> None:
        """Declare everything (idempotently) on a blocking channel and bind `events`."""
        self.declare_exchange(channel)
        own_requeue = self.shared_requeue_exchange is None
        if own_requeue:
            channel.exchange_declare(self.requeue_exchange, exchange_type="direct", durable=True)
            kept = {"x-delivery-limit": _DEAD_LETTER_DELIVERY_LIMIT} if self.queue_type == "quorum" else {}
            channel.queue_declare(self.dead_letter_queue, durable=True, arguments=self._arguments(kept))
        # Dead-lettering by the broker goes through the requeue exchange too: declaring a
        # queue needs write access to its dead-letter exchange, and a service's user must
        # have none on the default one.
        backstop: dict[str, Any] = {
            "x-dead-letter-exchange": self.requeue_exchange,
            "x-dead-letter-routing-key": self.dead_letter_queue,
        }
        if self.queue_type == "quorum":
            # A receiver that crashes the process on every delivery never reaches our
            # retry logic; the broker's delivery limit then dead-letters it.
            backstop["x-delivery-limit"] = _QUORUM_DELIVERY_LIMIT
            backstop.update(_AT_LEAST_ONCE)
        channel.queue_declare(self.queue, durable=True, arguments=self._arguments(backstop))
        for event in sorted(set(events)):
            channel.queue_bind(self.queue, self.exchange, routing_key=event)
        for delay, name in zip(self.retry_delays, self.retry_queues, strict=True):
            back = {
                "x-queue-type": "quorum",
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": self.requeue_exchange,
                "x-dead-letter-routing-key": self.queue,
                **_AT_LEAST_ONCE,
            }
            channel.queue_declare(name, durable=True, arguments=back)
        if own_requeue:
            for name in [self.queue, self.dead_letter_queue, *self.retry_queues]:
                channel.queue_bind(name, self.requeue_exchange, routing_key=name)

    @property
    def in_place_retries(self) -> bool:
        """Whether a failing event is retried where it is (a partition keeps its order) rather than delayed."""
        return self.single_active_consumer

    def declare_exchange(self, channel: Any) -> None:
        """Declare EXCHANGE and, with UNROUTED_QUEUE, its alternate exchange and queue: all a producer needs."""
        # Arguments only when there are some: an exchange's arguments cannot change once declared.
        extra = {"arguments": dict(self.exchange_arguments)} if self.exchange_arguments else {}
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True, **extra)
        if self.unrouted_queue is not None:
            self._declare_unrouted(channel, self.unrouted_queue)

    def _declare_unrouted(self, channel: Any, queue: str) -> None:
        # The alternate exchange named in EXCHANGE's arguments, and the queue behind it.
        # Any type would do for an alternate exchange; fanout keeps every routing key.
        alternate = dict(self.exchange_arguments)["alternate-exchange"]
        channel.exchange_declare(alternate, exchange_type="fanout", durable=True)
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": self.queue_type})
        channel.queue_bind(queue, alternate, routing_key="")

    def _arguments(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        expiry = {} if self.expires_ms is None else {"x-expires": self.expires_ms}
        single = {"x-single-active-consumer": True} if self.single_active_consumer else {}
        return {"x-queue-type": self.queue_type, **expiry, **single, **(extra or {})}


@dataclass(frozen=True)
class Partitions:
    """The queues of a service's ordered subscriptions.

    A consistent-hash exchange (RabbitMQ's bundled ``rabbitmq_consistent_hash_exchange``
    plugin) spreads the ordered events over PARTITIONS queues by ``ce-partitionkey``, so
    the events of one key always land in the same queue, in publishing order. Each queue
    has a single active consumer: every daemon consumes all of them, the broker hands each
    to one daemon at a time and moves it when that daemon goes. A failing event is retried
    in place and its partition waits; after the last attempt it is dead-lettered into the
    service's dead-letter queue and the partition goes on.
    """

    service: Topology
    count: int

    @classmethod
    def for_settings(cls, settings: BroadcasterSettings) -> Partitions:
        return cls(Topology.for_settings(settings), settings.partitions)

    @property
    def exchange(self) -> str:
        """The consistent-hash exchange; a replayed ordered event goes back through it."""
        return f"{self.service.queue}.partitions"

    @property
    def queues(self) -> list[Topology]:
        """One topology per partition queue, dead-lettering into the service's queue."""
        service = self.service
        return [
            Topology(
                service.exchange,
                f"{service.queue}.partition.{index}",
                service.queue_type,
                (),  # retries happen in place: a delay queue would let later events pass
                shared_dead_letter_queue=service.dead_letter_queue,
                shared_requeue_exchange=service.requeue_exchange,
                single_active_consumer=True,
                exchange_arguments=service.exchange_arguments,
            )
            for index in range(self.count)
        ]

    def declare(self, channel: Any, events: Iterable[str]) -> None:
        """Declare the exchange and the partition queues, and route `events` to them.

        The service's own topology (dead-letter queue, requeue exchange) must be declared first.
        """
        channel.exchange_declare(
            self.exchange, exchange_type="x-consistent-hash", durable=True, arguments={"hash-header": _KEY_HEADER}
        )
        for event in sorted(set(events)):
            channel.exchange_bind(self.exchange, self.service.exchange, routing_key=event)
        for queue in self.queues:
            queue.declare(channel, ())
            channel.queue_bind(queue.queue, self.exchange, routing_key="1")  # equal weights


@dataclass(frozen=True)
class ServiceQueues:
    """What one daemon of a service consumes, by kind of subscription, and how it is declared.

    Service-fanout events go to the service queue, instance-fanout ones to the daemon's
    own instance queue, ordered ones to the partition queues.
    """

    service: Topology
    shared: tuple[str, ...]
    instance: Topology | None
    instance_events: tuple[str, ...]
    partitions: Partitions | None
    ordered: tuple[str, ...]
    instance_moves: int = 0  # see moved_instance()

    @classmethod
    def for_subscriptions(cls, settings: BroadcasterSettings, subscribed: Mapping[str, Subscription]) -> ServiceQueues:
        instance = tuple(event for event, sub in subscribed.items() if sub.fanout == "instance")
        ordered = tuple(event for event, sub in subscribed.items() if sub.ordered)
        shared = tuple(event for event, sub in subscribed.items() if sub.fanout == "service" and not sub.ordered)
        return cls(
            Topology.for_settings(settings),
            shared,
            Topology.for_instance(settings) if instance else None,
            instance,
            Partitions.for_settings(settings) if ordered else None,
            ordered,
        )

    def moved_instance(self, settings: BroadcasterSettings) -> ServiceQueues:
        """These queues with the instance queue under the next name.

        A classic queue lives on one node; while that node is down the broker refuses to
        declare it anywhere else ("home node ... is down"). A daemon whose instance queue
        is on a dead node takes a queue of a new name on a live one, rather than waiting
        for that node and consuming nothing meanwhile. The old queue, and any event still
        in it, expires INSTANCE_QUEUE_EXPIRES after its node is back.
        """
        assert self.instance is not None
        moves = self.instance_moves + 1
        return replace(self, instance=Topology.for_instance(settings, moves), instance_moves=moves)

    @property
    def consumed(self) -> list[Topology]:
        """Every queue the daemon consumes: the service queue, its instance queue, the partitions."""
        own = [self.instance] if self.instance is not None else []
        return [self.service, *own, *(self.partitions.queues if self.partitions else [])]

    def declare(self, channel: Any, *, instance: bool = True) -> None:
        """Declare the queues, their delay and dead-letter queues and the bindings, on `channel`.

        `instance=False` leaves out the instance queue, which is a daemon's own.
        """
        self.service.declare(channel, self.shared)
        if instance and self.instance is not None:
            self.instance.declare(channel, self.instance_events)
        if self.partitions is not None:
            self.partitions.declare(channel, self.ordered)
            for event in self.ordered:  # an event that became ordered must stop reaching the service queue
                channel.queue_unbind(self.service.queue, self.service.exchange, routing_key=event)


def declare_service(channel: Any, settings: BroadcasterSettings, subscribed: Mapping[str, Subscription]) -> None:
    """Declare what every daemon of the service shares, as a daemon does at start, on `channel`.

    The service queue, its delay and dead-letter queues and the requeue exchange, bound
    to the events of `subscribed`; the partitions of ordered ones. Instance queues are a
    daemon's own and are left to it. Idempotent: for ``broadcaster_topology --apply``.
    """
    if not subscribed:  # a producer only: no queue (its broker user may declare none)
        Topology.for_settings(settings).declare_exchange(channel)
        return
    ServiceQueues.for_subscriptions(settings, subscribed).declare(channel, instance=False)


@dataclass(frozen=True, order=True)
class Binding:
    """One binding: `source` exchange to `destination` (a queue or an exchange) with `routing_key`."""

    source: str
    destination: str
    destination_type: str  # "queue" or "exchange", as the management API says
    routing_key: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination_type} {self.destination} with {self.routing_key!r}"


@dataclass
class Plan:
    """What declare_service() declares, recorded rather than sent: the code's side of a comparison.

    It also serves as the channel that records it, so the topology is written once, in
    the declare methods above.
    """

    exchanges: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name: (type, arguments)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: arguments
    bindings: set[Binding] = field(default_factory=set)

    def exchange_declare(
        self, exchange: str, exchange_type: str = "direct", arguments: dict[str, Any] | None = None, **_: Any
    ) -> None:
        self.exchanges[exchange] = (exchange_type, dict(arguments or {}))

    def queue_declare(self, queue: str, arguments: dict[str, Any] | None = None, **_: Any) -> None:
        self.queues[queue] = dict(arguments or {})

    def queue_bind(self, queue: str, exchange: str, routing_key: str | None = None, **_: Any) -> None:
        self.bindings.add(Binding(exchange, queue, "queue", queue if routing_key is None else routing_key))

    def queue_unbind(self, queue: str, exchange: str, routing_key: str | None = None, **_: Any) -> None:
        self.bindings.discard(Binding(exchange, queue, "queue", queue if routing_key is None else routing_key))

    def exchange_bind(self, destination: str, source: str, routing_key: str = "", **_: Any) -> None:
        self.bindings.add(Binding(source, destination, "exchange", routing_key))


def plan(settings: BroadcasterSettings, subscribed: Mapping[str, Subscription]) -> Plan:
    """The exchanges, queues and bindings declare_service() would declare, without a broker."""
    recorded = Plan()
    declare_service(recorded, settings, subscribed)
    return recorded

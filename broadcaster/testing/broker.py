"""`InMemoryBroker`: RabbitMQ and this service's consumer daemon, in the test process.

Routing follows the service's topology as `broadcaster.topology` declares it (through
`broadcaster.testing.exchanges`); each delivery goes through the daemon's own code:
`failures.attempt` (the sealed attempt count), `dispatch` (decode, verify, validate,
upcast, loop prevention, inbox, stale-event guard, receivers), `settlement.settle`
(ack, retry to which delay queue, or dead-letter), and `failures.failure_properties` for
the copy a retry or a dead letter is. Delays are recorded on a clock of the broker's
own, never slept: `run_retries()` and `advance()` deliver what waits.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

import pika

from broadcaster import failures, signing
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.envelope import JSON, Envelope, OutboundMessage, properties_for
from broadcaster.registry import Subscription, subscriptions
from broadcaster.settings import BroadcasterSettings, get_settings
from broadcaster.settlement import Verdict, settle
from broadcaster.testing.capture import Capture, _body
from broadcaster.testing.exchanges import Exchanges, service_network
from broadcaster.testing.records import DeadLetter, Handled, Message, Retry
from broadcaster.topology import Topology
from broadcaster.transport import use_transport

__all__ = ["InMemoryBroker"]


class InMemoryBroker(Capture):
    """A transport that routes every event as RabbitMQ would and consumes as the daemon would.

    Use as ``with InMemoryBroker() as broker:``. The broker is a capture (what this
    process broadcast); `handled` lists every delivery to the service's queues with its
    verdict, `delivered` the ones whose receivers ran, `retries` every retry scheduled,
    `dead_letters` the dead-letter queue. `send()` publishes as another service would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[Outcome] = []
        self.handled: list[Handled] = []
        self.retries: list[Retry] = []
        self.unrouted: list[Message] = []
        """Messages no queue took: the publisher logs and counts them (``mandatory`` returns)."""
        self.queues: dict[str, list[Message]] = defaultdict(list)
        """What rests in queues no daemon consumes: the dead-letter queue, UNROUTED_QUEUE."""
        self.clock = 0.0
        """Seconds on the broker's clock; only `advance()` and `run_retries()` move it."""
        self._ready: deque[tuple[str, Message]] = deque()
        self._delayed: list[tuple[float, int, str, Message, Retry]] = []  # a heap by due time
        self._order = itertools.count()
        self._bindings: list[tuple[str, str, str]] = []  # (queue, exchange, routing key) of bind()
        self._lock = threading.Lock()
        self._pumping = False
        self._transport: Any = None

    # -- what a test reads -----------------------------------------------------------

    @property
    def delivered(self) -> list[Handled]:
        """Deliveries whose receivers ran and were acknowledged, in order (stale events skipped are not)."""
        return [h for h in self.handled if h.verdict is Verdict.ACKED and not h.outcome.skipped]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """The service's dead-letter queue, oldest first, each with what its failure headers say."""
        settings = get_settings()
        queue = Topology.for_settings(settings).dead_letter_queue
        return [DeadLetter(m, failures.read(m.properties, m.body, settings)) for m in self.queues[queue]]

    @property
    def waiting(self) -> list[Retry]:
        """Retries whose copies wait in a delay queue, soonest first."""
        return [entry[4] for entry in sorted(self._delayed)]

    # -- what a test does ------------------------------------------------------------

    def run_retries(self) -> int:
        """Deliver every waiting retry when it is due, and the retries those schedule; return how many."""
        count = 0
        while self._delayed:
            count += self.advance(self._delayed[0][0] - self.clock)
        return count

    def advance(self, seconds: float) -> int:
        """Move the clock `seconds` on, delivering the retries due by then in order; return how many."""
        until, count = self.clock + seconds, 0
        while self._delayed and self._delayed[0][0] <= until:
            due, _, queue, message, _ = heapq.heappop(self._delayed)
            self.clock = max(self.clock, due)
            self._expire(queue, message)
            count += 1
        self.clock = max(self.clock, until)
        return count

    def send(
        self,
        event: str,
        payload: Any,
        *,
        source: str = "tests",
        schema_version: str | None = None,
        partition_key: str | None = None,
        headers: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> Envelope:
        """Publish an event as another service would (a schema instance, a wire-form dict, or bytes).

        `headers` are added to the ``ce-`` ones (or replace them); returns the envelope.
        """
        envelope = Envelope.new(source=source, type=event, schema_version=schema_version, partition_key=partition_key)
        props = properties_for(envelope, user_id=user_id, headers={**envelope.headers(), **(headers or {})})
        self.send_raw(event, _body(payload), props)
        return envelope

    def send_raw(self, routing_key: str, body: bytes, properties: pika.BasicProperties | None = None) -> None:
        """Publish a message exactly as given to the exchange (what a foreign or hostile producer sends)."""
        self._publish(get_settings().exchange, routing_key, properties or pika.BasicProperties(), body)
        self._pump()

    def bind(self, routing_key: str, queue: str | None = None) -> None:
        """Bind the service queue (or `queue`) to EXCHANGE with a topic pattern, as ``queue_bind`` would."""
        settings = get_settings()
        self._bindings.append((queue or settings.queue_name, settings.exchange, routing_key))

    # -- the Transport the publisher seam expects ------------------------------------

    def publish(self, message: OutboundMessage, *, wait: bool = True) -> None:
        """Record `message`, publish it as the publisher does, and deliver what it reaches."""
        super().publish(message, wait=wait)
        settings = get_settings()
        headers = message.envelope.headers()
        if settings.signing_key is not None:
            signing.sign(headers, JSON, message.body, settings.signing_key)
        props = properties_for(message.envelope, user_id=settings.broker_user, headers=headers)
        self._publish(settings.exchange, message.routing_key, props, message.body)
        self._pump()

    def __enter__(self) -> InMemoryBroker:
        self._transport = use_transport(self)
        self._transport.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._transport.__exit__(*exc)

    # -- the broker ------------------------------------------------------------------

    def _network(self) -> tuple[Exchanges, dict[str, Topology]]:
        return service_network(get_settings(), subscriptions(), self._bindings)

    def _publish(
        self, exchange: str, routing_key: str, props: pika.BasicProperties, body: bytes, retry: Retry | None = None
    ) -> None:
        message = Message(routing_key, _wire(props), body, exchange)
        exchanges, consumed = self._network()
        queues = exchanges.route(exchange, routing_key, message.headers)
        if not queues:
            self.unrouted.append(message)
        for queue in queues:
            ttl = exchanges.plan.queues.get(queue, {}).get("x-message-ttl")
            if queue in consumed:
                with self._lock:
                    self._ready.append((queue, message))
            elif ttl is None:
                self.queues[queue].append(message)
            else:  # a delay queue: the broker dead-letters the copy once its TTL runs out
                retry = retry or Retry(message.type, None, 0, ttl / 1000, queue, "", "", False, self.clock + ttl / 1000)
                heapq.heappush(self._delayed, (retry.due, next(self._order), queue, message, retry))

    def _expire(self, queue: str, message: Message) -> None:
        # A delay queue's TTL ran out: the broker dead-letters the copy back to the service queue.
        exchanges, _ = self._network()
        arguments = exchanges.plan.queues.get(queue, {})
        key = arguments.get("x-dead-letter-routing-key", message.routing_key)
        props = _expired(message, queue)
        self._publish(str(arguments["x-dead-letter-exchange"]), str(key), props, message.body)
        self._pump()

    def _pump(self) -> None:
        """Deliver what the queues hold, oldest first; events receivers fire queue up behind."""
        while True:
            with self._lock:
                if self._pumping or not self._ready:
                    return
                self._pumping = True
                queue, message = self._ready.popleft()
            try:
                self._consume(queue, message)
            finally:
                with self._lock:
                    self._pumping = False

    def _consume(self, queue: str, message: Message) -> None:
        """One delivery, as the daemon handles and settles it."""
        settings, subscribed = get_settings(), subscriptions()
        topology = self._network()[1].get(queue) or Topology.for_settings(settings)
        attempt = failures.attempt(message.properties, message.body, settings)
        outcome = _dispatch(message, attempt, settings, subscribed)
        while outcome.action is Action.RETRY and topology.in_place_retries and attempt < settings.max_attempts:
            self._record_retry(outcome, message, attempt, settings.retry_delays[attempt - 1], queue, in_place=True)
            attempt += 1
            outcome = _dispatch(message, attempt, settings, subscribed)
        settlement = settle(outcome, attempt, topology)
        self.outcomes.append(outcome)
        self.handled.append(Handled(queue, message, attempt, outcome, settlement.verdict))
        if settlement.queue is None:
            return
        retry = None
        if settlement.verdict is Verdict.RETRIED:
            ttl = self._network()[0].plan.queues[settlement.queue]["x-message-ttl"]
            retry = self._record_retry(outcome, message, attempt, ttl / 1000, settlement.queue, in_place=False)
        copy = failures.failure_properties(
            message.properties,
            message.body,
            settings,
            attempt=attempt,
            reason=outcome.reason,
            error=outcome.detail,
            exception=outcome.exception,
            queue=topology.queue,
            routing_key=message.routing_key,
        )
        self._publish(topology.requeue_exchange, settlement.queue, copy, message.body, retry)

    def _record_retry(
        self, outcome: Outcome, message: Message, attempt: int, delay: float, queue: str, *, in_place: bool
    ) -> Retry:
        envelope = outcome.envelope
        identity = envelope.id if envelope else None
        retry = Retry(
            message.type, identity, attempt, delay, queue, outcome.reason, outcome.detail, in_place, self.clock + delay
        )
        self.retries.append(retry)
        return retry


def _dispatch(
    message: Message, attempt: int, settings: BroadcasterSettings, subscribed: dict[str, Subscription]
) -> Outcome:
    return dispatch(message.properties, message.body, settings=settings, subscriptions=subscribed, attempt=attempt)


def _expired(message: Message, queue: str) -> pika.BasicProperties:
    """The properties of a message the broker dead-letters from `queue` as expired: ``x-death`` added.

    As RabbitMQ 3.10 writes it: one entry per queue and reason, the latest first, its
    count raised when the message dies there again; ``x-first-death-*`` set once.
    """
    headers = message.headers
    deaths = [death for death in headers.get("x-death") or [] if isinstance(death, dict)]
    earlier = next((d for d in deaths if (d.get("queue"), d.get("reason")) == (queue, "expired")), None)
    entry = {
        "count": (earlier or {}).get("count", 0) + 1,
        "exchange": message.exchange,
        "queue": queue,
        "reason": "expired",
        "routing-keys": [message.routing_key],
        "time": datetime.now(UTC).replace(microsecond=0),
    }
    headers["x-death"] = [entry, *(death for death in deaths if death is not earlier)]
    for name, value in (("exchange", message.exchange), ("queue", queue), ("reason", "expired")):
        headers.setdefault(f"x-first-death-{name}", value)
    props = copy.copy(message.properties)
    props.headers = headers
    return props


def _wire(props: pika.BasicProperties) -> pika.BasicProperties:
    """`props` as the consumer reads them off the wire: encoded and decoded by pika."""
    decoded = pika.BasicProperties()
    decoded.decode(b"".join(props.encode()))
    return decoded

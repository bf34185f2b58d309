"""The consumer daemon: one service queue in, local signals out.

The connection's thread only talks to the broker: it reads deliveries, sends acks and
copies, and keeps heartbeats flowing however long receivers take. CONCURRENCY worker
threads decode, verify and dispatch deliveries and hand the outcomes back; the
connection's thread then settles each at once (`broadcaster.settlement` decides how,
`broadcaster.scheduler` says what may run and what to ack). This is pika's documented
way of running slow work beside a BlockingConnection: work off its thread, results
marshalled back with ``add_callback_threadsafe``. Events of an ordered subscription
arrive on partition queues, and those with the same partition key run one at a time,
in order; a failing one is retried in place.

A message is acknowledged only after its receivers ran and the events they caused were
confirmed by the broker. A receiver that raises sends the message to the next delay
queue; after the last attempt, or at once for a message that can never succeed, it is
copied to the dead-letter queue with the reason in headers, and only then acked. Nothing
a message carries stops the daemon: an exception nobody foresaw is a dead letter
(``internal-error``), and properties pika cannot decode are one too (``undecodable``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import pika
import pika.exceptions

from broadcaster import connection, failures, observability, properties, transport
from broadcaster.connection import describe
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.failures import Reason
from broadcaster.registry import Subscription
from broadcaster.scheduler import AckWindow
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Settlement, Verdict, settle
from broadcaster.topology import Partitions, Topology
from broadcaster.workers import Delivery, Finished, Housekeeping, Receivers

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

_FAILURE_RESERVE = 4096  # bytes of failure headers a copy adds (the error text is at most 1,000 characters)
_POLL = 1  # seconds the connection's thread waits for I/O when nothing happens
_CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    OSError,
)
# The broker refused a retry or dead-letter copy (a queue deleted under us): reconnecting
# declares the topology again, and the message, still unacked, comes back.
_COPY_REFUSED = (pika.exceptions.UnroutableError, pika.exceptions.NackError)


class Consumer:
    """Consumes the service queue and re-emits each event on its local signal."""

    def __init__(
        self,
        settings: BroadcasterSettings,
        subscriptions: Mapping[str, Subscription],
        *,
        prefetch: int | None = None,
        max_messages: int | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = dict(subscriptions)
        self.topology = Topology.for_settings(settings)
        subs = self.subscriptions.items()
        instance_events = [e for e, sub in subs if sub.fanout == "instance"]
        self._ordered_events = [e for e, sub in subs if sub.ordered]
        self.instance_topology = Topology.for_instance(settings) if instance_events else None
        self.partitions = Partitions.for_settings(settings) if self._ordered_events else None
        self._bindings = [
            (self.topology, [e for e, sub in subs if sub.fanout == "service" and not sub.ordered]),
            *([(self.instance_topology, instance_events)] if self.instance_topology else []),
        ]
        self._queues = [topology for topology, _ in self._bindings] + (
            self.partitions.queues if self.partitions else []
        )
        self.concurrency = concurrency or settings.concurrency
        # Enough messages in hand to keep every worker busy while the last ones are acked.
        self.prefetch = prefetch or max(settings.prefetch, 2 * self.concurrency)
        self.max_messages = max_messages
        self.counts: Counter[str] = Counter()
        self.connections_opened = 0
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._consumer_tags: list[str] = []
        self._nodes = connection.Nodes(settings, "consumer")
        self._frame_max = self._nodes.all[0].params.frame_max
        self._submitted = 0
        self._finished: deque[Finished] = deque()
        self._wake_pending = False
        self._acks = AckWindow()
        self._receivers = Receivers(self._handle, self._on_finished, self.concurrency)
        self._housekeeping = Housekeeping(settings, self.subscriptions)

    @property
    def handled(self) -> int:
        """Messages finished so far, whatever their outcome."""
        return sum(self.counts.values())

    def stop(self) -> None:
        """Ask the daemon to stop after the message in hand (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until stop() or --max-messages; reconnect when the broker goes away.

        Raises BrokerUnavailable when the very first connection fails, so a misconfigured
        daemon stops at once with a clear message rather than retrying forever.
        """
        properties.install_tolerant_decoder()
        self._receivers.start()
        try:
            self._connect_first()
            self._log_start()
            self._consume()
            self._finish_in_hand()
        finally:
            self._receivers.stop()
            self._close()
        logger.info("consume_signals: stopped after %d message(s) (%s)", self.handled, self._summary())

    def _log_start(self) -> None:
        logger.info(
            "consume_signals: started service=%s queue=%s events=%s broker=%s prefetch=%d concurrency=%d pid=%d",
            self.settings.service_name,
            ",".join(topology.queue for topology, _ in self._bindings)
            + (f" (+{self.partitions.count} partitions)" if self.partitions else ""),
            ",".join(sorted(self.subscriptions)) or "-",
            self.settings.redacted_broker_url,
            self.prefetch,
            self.concurrency,
            os.getpid(),
        )

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                if self._connection is None:
                    # A receiver still running holds a delivery of the lost channel; let it
                    # finish before its redelivery can arrive, so it does not run twice at once.
                    self._receivers.wait_idle(self._stop)
                    node = self._connect()
                    logger.info("consume_signals: reconnected to %s", node.label)
                assert self._connection is not None  # connected just above
                self._connection.process_data_events(time_limit=_POLL)
                self._settle_finished()
                self._receivers.report_long_running(self.settings.consumer_timeout)
            except (*_CONNECTION_ERRORS, *_COPY_REFUSED, BrokerUnavailable) as exc:
                self._drop_connection()
                # The next node at once; the back-off only once every node failed in turn.
                delay = self._nodes.failed()
                logger.warning("consume_signals: connection lost (%s); retrying in %.1f s", describe(exc), delay)
                self._stop.wait(delay)

    def _finish_in_hand(self) -> None:
        # The delivery whose receivers are running is finished and acked; deliveries not
        # started stay unacked and go back to the queue when the channel closes.
        self._receivers.discard_queued()
        while self._receivers.busy and self._connection is not None:
            try:
                self._connection.process_data_events(time_limit=0.1)  # type: ignore[arg-type]  # the stubs say int; pika takes a float
            except (*_CONNECTION_ERRORS, BrokerUnavailable):
                self._drop_connection()
        try:
            self._settle_finished()
        except (*_CONNECTION_ERRORS, *_COPY_REFUSED):
            self._drop_connection()

    def _summary(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items())) or "none"

    def _connect_first(self) -> None:
        # Every node once; a daemon none of them answers stops at once (see run()).
        for tried in range(1, len(self._nodes.all) + 1):
            try:
                self._connect()
                return
            except BrokerUnavailable as exc:
                if tried == len(self._nodes.all):
                    raise
                logger.warning("consume_signals: %s; trying the next node", exc)
                self._nodes.failed()

    def _connect(self) -> connection.Node:
        """Connect to the next node of BROKER_URL, declare the topology and consume; return the node."""
        node = self._nodes.next()
        try:
            conn = pika.BlockingConnection(node.params)
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to the broker at {node.label}: {describe(exc)}") from exc
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.prefetch)
            self._declare(channel)
            self._consumer_tags = [
                channel.basic_consume(topology.queue, functools.partial(self._on_message, topology))
                for topology in self._queues
            ]
        except Exception:
            connection.close_quietly(conn)
            raise
        self._connection, self._channel = conn, channel
        self._acks = AckWindow()
        self.connections_opened += 1
        self._nodes.connected(node)
        return node

    def _declare(self, channel: Any) -> None:
        for topology, events in self._bindings:
            topology.declare(channel, events)
        if self.partitions is not None:
            self.partitions.declare(channel, self._ordered_events)
            for event in self._ordered_events:
                # An event that became ordered must stop reaching the service queue too.
                channel.queue_unbind(self.topology.queue, self.topology.exchange, routing_key=event)

    # -- the connection's thread ---------------------------------------------------

    def _on_message(
        self, topology: Topology, channel: Any, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        if self._stop.is_set() or (self.max_messages is not None and self._submitted >= self.max_messages):
            return  # left unacked: the broker redelivers it when the channel closes
        self._submitted += 1
        lane = _lane(props) if topology.in_place_retries else None
        attempt = failures.attempt(props, body, self.settings)  # believed only on our own sealed copies
        delivery = Delivery(topology, channel, method.delivery_tag, method.routing_key, props, body, attempt, lane)
        self._acks.delivered(method.delivery_tag)
        self._receivers.submit(delivery)

    def _settle_finished(self) -> None:
        """Carry out the verdicts on every delivery whose receivers finished, and ack them."""
        self._wake_pending = False
        settled: list[int] = []
        requeued: set[int] = set()
        while self._finished:
            finished = self._finished.popleft()
            delivery = finished.delivery
            if finished.abandoned or delivery.channel is not self._channel or not delivery.channel.is_open:
                continue  # left unacked, or its channel is gone: the broker delivers it again
            outcome = finished.outcome
            settlement = settle(outcome, finished.attempt, delivery.topology, caused_confirmed=finished.confirmed)
            self._carry_out(delivery, finished, settlement)
            settled.append(delivery.tag)
            if settlement.verdict is Verdict.REQUEUED:
                requeued.add(delivery.tag)
            verdict = settlement.verdict.value
            self.counts[verdict] += 1
            label = self._event_label(outcome)
            observability.handled(outcome.envelope, label, verdict, outcome.reason, finished.seconds)
        if settled:
            acks = self._acks.settle(settled, already=frozenset(requeued))
            if acks.up_to is not None:  # usually one frame for every message of the round
                self._channel.basic_ack(acks.up_to, multiple=True)
            for tag in acks.single:  # finished ahead of a slower one: its prefetch slot frees now
                self._channel.basic_ack(tag)
        if self.max_messages is not None and self.handled >= self.max_messages:
            self.stop()

    def _carry_out(self, delivery: Delivery, finished: Finished, settlement: Settlement) -> None:
        if settlement.verdict is Verdict.REQUEUED:
            delivery.channel.basic_nack(delivery.tag, requeue=True)
        elif settlement.queue is not None:
            self._republish(delivery.channel, delivery, finished, settlement.queue)
            if settlement.verdict is Verdict.DEAD_LETTERED:
                _log_dead_letter(finished.outcome, delivery, finished.attempt)

    def _event_label(self, outcome: Outcome) -> str:
        # Only subscribed types become labels: hostile input must not mint new series.
        event = outcome.envelope.type if outcome.envelope else ""
        return event if event in self.subscriptions else "(other)"

    def healthy(self) -> bool:
        """Connected and not stopping: what a container liveness probe should see."""
        conn = self._connection
        return conn is not None and conn.is_open and not self._stop.is_set()

    def _republish(self, channel: Any, delivery: Delivery, finished: Finished, queue: str) -> None:
        # A sealed copy under our own broker user: the next delivery believes its attempt
        # count and its original publisher (broadcaster.failures), and nothing else does.
        outcome = finished.outcome
        # Headers pika cannot encode again, or that the failure headers would push past the
        # frame size, would make the broker close the connection and the message come back
        # first: the copy carries what fits, and says (sealed) what it left out.
        source, notes = properties.encodable_source(delivery.properties, self._frame_max, reserve=_FAILURE_RESERVE)
        props = failures.failure_properties(
            source,
            delivery.body,
            self.settings,
            attempt=finished.attempt,
            reason=outcome.reason,
            error=outcome.detail,
            exception=outcome.exception,
            queue=delivery.topology.queue,
            routing_key=delivery.routing_key,
            notes=notes,
        )
        props = properties.encodable(props, self._frame_max)  # the last resort; never needed so far
        channel.basic_publish(delivery.topology.requeue_exchange, queue, delivery.body, props, mandatory=True)

    def _drop_connection(self) -> None:
        # Unsent acks die with the channel: the broker redelivers those messages.
        self._receivers.discard_queued()
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            connection.close_quietly(conn)

    def _close(self) -> None:
        if self._connection is not None:
            try:
                if self._channel is not None and self._channel.is_open:
                    for tag in self._consumer_tags:
                        self._channel.basic_cancel(tag)
            except _CONNECTION_ERRORS:
                pass
            self._drop_connection()
        try:
            transport.flush(self.settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("consume_signals: %s at shutdown", exc)

    # -- the receivers' thread -----------------------------------------------------

    def _handle(self, delivery: Delivery) -> Finished:
        """Run the receivers of one delivery (retrying in place on a partition); never raises."""
        started = time.perf_counter()
        self._housekeeping.before_delivery()
        confirmed, attempt = True, delivery.attempt
        try:
            outcome = self._dispatch(delivery, attempt)
            while self._retry_in_place(delivery, outcome, attempt):
                delay = self.settings.retry_delays[attempt - 1]
                logger.warning("consume_signals: retrying %s in place in %g s", _name(outcome, delivery), delay)
                if self._stop.wait(delay):  # stopping: left unacked, it comes back in order
                    return Finished(delivery, outcome, False, time.perf_counter() - started, attempt, True)
                attempt += 1
                outcome = self._dispatch(delivery, attempt)
            if outcome.action is Action.ACK:
                confirmed = self._flush_caused_events(outcome)
        except Exception as exc:  # nothing a message carries may stop the daemon
            logger.exception("consume_signals: unexpected error handling delivery %s", delivery.tag)
            outcome = internal_error(exc)
        return Finished(delivery, outcome, confirmed, time.perf_counter() - started, attempt)

    def _retry_in_place(self, delivery: Delivery, outcome: Outcome, attempt: int) -> bool:
        return (
            outcome.action is Action.RETRY
            and delivery.topology.in_place_retries
            and attempt < self.settings.max_attempts
            and not self._stop.is_set()
        )

    def _dispatch(self, delivery: Delivery, attempt: int) -> Outcome:
        reason = properties.undecodable(delivery.properties)
        if reason is not None:
            return Outcome(
                Action.DEAD_LETTER,
                reason=Reason.UNDECODABLE,
                detail=f"the message's properties cannot be decoded ({reason}); its headers are lost",
            )
        return dispatch(
            delivery.properties,
            delivery.body,
            settings=self.settings,
            subscriptions=self.subscriptions,
            attempt=attempt,
        )

    def _flush_caused_events(self, outcome: Outcome) -> bool:
        # Events the receivers fired must be safe at the broker before the message that
        # caused them is acked, or a crash in between would lose them.
        try:
            transport.flush(self.settings.publish_timeout)
        except FlushTimeout as exc:
            envelope = outcome.envelope
            logger.error(
                "events caused by %s were not confirmed (%s); requeueing it",
                envelope and envelope.id,
                exc,
            )
            return False
        return True

    def _on_finished(self, finished: Finished) -> None:
        # On the receivers' thread: hand the result to the connection's thread and wake it,
        # once per batch of results, so the ack goes out now rather than at the next poll.
        self._finished.append(finished)
        conn = self._connection
        if self._wake_pending or conn is None:
            return
        self._wake_pending = True
        try:
            conn.add_callback_threadsafe(self._settle_finished)
        except Exception:  # a closed connection: the main loop drops the result
            self._wake_pending = False


def internal_error(exc: BaseException) -> Outcome:
    """The outcome of an exception nobody foresaw while handling a message: a dead letter."""
    return Outcome(
        Action.DEAD_LETTER,
        reason=Reason.INTERNAL_ERROR,
        detail=f"{type(exc).__qualname__}: {exc}"[: failures.ERROR_TEXT_LIMIT],
        exception=f"{type(exc).__module__}.{type(exc).__qualname__}",
    )


def _lane(props: pika.BasicProperties) -> str | None:
    key = (props.headers or {}).get("ce-partitionkey")
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    return key if isinstance(key, str) and key else None


def _name(outcome: Outcome, delivery: Delivery) -> str:
    envelope, props = outcome.envelope, delivery.properties
    event = envelope.type if envelope else props.type or "(unknown event)"
    return f"{event} {envelope.id if envelope else props.message_id or '(no id)'}"


def _log_dead_letter(outcome: Outcome, delivery: Delivery, attempt: int) -> None:
    name, detail = _name(outcome, delivery), outcome.detail[:200]
    logger.error("dead-lettered %s after %d attempt(s): %s: %s", name, attempt, outcome.reason, detail)

"""The consumer daemon: one service queue in, local signals out.

Two threads. The connection's thread only talks to the broker: it reads deliveries,
sends acks and copies, and keeps heartbeats flowing however long receivers take. The
receivers' thread decodes, verifies and dispatches one delivery at a time, in delivery
order, and hands the outcome back; the connection's thread then settles it at once
(`broadcaster.settlement` decides how). This is pika's documented way of running slow
work beside a BlockingConnection: work off its thread, results marshalled back with
``add_callback_threadsafe``.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from django.db import close_old_connections, connections

from broadcaster import connection, observability, properties, publisher
from broadcaster.connection import describe
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.registry import Subscription
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Settlement, Verdict, settle
from broadcaster.topology import Topology

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-broadcaster-attempt"
_INBOX_PRUNE_EVERY = 3600.0
_INBOX_PRUNE_RETRY = 60.0  # after a database error
_HEADER = "x-broadcaster-"
_ERROR_TEXT_LIMIT = 1000
_POLL = 1  # seconds the connection's thread waits for I/O when nothing happens
_CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    OSError,
)
# The broker refused a retry or dead-letter copy (a queue deleted under us): reconnecting
# declares the topology again, and the message, still unacked, comes back.
_COPY_REFUSED = (pika.exceptions.UnroutableError, pika.exceptions.NackError)
# Properties copied onto a retried or dead-lettered message. user_id is left out: the
# broker refuses a publish whose user_id is not the publishing connection's user.
_COPIED = (
    "content_type",
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
    "cluster_id",
)


class Consumer:
    """Consumes the service queue and re-emits each event on its local signal."""

    def __init__(
        self,
        settings: BroadcasterSettings,
        subscriptions: Mapping[str, Subscription],
        *,
        prefetch: int | None = None,
        max_messages: int | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = dict(subscriptions)
        self.topology = Topology.for_settings(settings)
        instance_events = [e for e, sub in self.subscriptions.items() if sub.fanout == "instance"]
        self.instance_topology = Topology.for_instance(settings) if instance_events else None
        self._bindings = [
            (self.topology, [e for e, sub in self.subscriptions.items() if sub.fanout == "service"]),
            *([(self.instance_topology, instance_events)] if self.instance_topology else []),
        ]
        self.prefetch = prefetch or settings.prefetch
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
        self._finished: deque[_Finished] = deque()
        self._wake_pending = False
        self._receivers = _Receivers(self._handle, self._on_finished)
        self._housekeeping = _Housekeeping(settings, self.subscriptions)

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
            "consume_signals: started service=%s queue=%s events=%s broker=%s prefetch=%d pid=%d",
            self.settings.service_name,
            ",".join(topology.queue for topology, _ in self._bindings),
            ",".join(sorted(self.subscriptions)) or "-",
            self.settings.redacted_broker_url,
            self.prefetch,
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
            self._consumer_tags = []
            for topology, events in self._bindings:
                topology.declare(channel, events)
                callback = functools.partial(self._on_message, topology)
                self._consumer_tags.append(channel.basic_consume(topology.queue, callback))
        except Exception:
            connection.close_quietly(conn)
            raise
        self._connection, self._channel = conn, channel
        self.connections_opened += 1
        self._nodes.connected(node)
        return node

    # -- the connection's thread ---------------------------------------------------

    def _on_message(
        self, topology: Topology, channel: Any, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        if self._stop.is_set() or (self.max_messages is not None and self._submitted >= self.max_messages):
            return  # left unacked: the broker redelivers it when the channel closes
        self._submitted += 1
        delivery = _Delivery(topology, channel, method.delivery_tag, method.routing_key, props, body, _attempt(props))
        self._receivers.submit(delivery)

    def _settle_finished(self) -> None:
        """Carry out the verdicts on every delivery whose receivers finished; ack them together."""
        self._wake_pending = False
        ack_up_to = None
        while self._finished:
            finished = self._finished.popleft()
            delivery = finished.delivery
            if delivery.channel is not self._channel or not delivery.channel.is_open:
                continue  # its channel is gone: the broker redelivers it
            outcome = finished.outcome
            settlement = settle(outcome, delivery.attempt, delivery.topology, caused_confirmed=finished.confirmed)
            self._carry_out(delivery, outcome, settlement)
            if settlement.verdict is not Verdict.REQUEUED:
                ack_up_to = delivery.tag
            verdict = settlement.verdict.value
            self.counts[verdict] += 1
            observability.handled(
                outcome.envelope, self._event_label(outcome), verdict, outcome.reason, finished.seconds
            )
        if ack_up_to is not None:
            # Acked in order, so one frame covers every message settled in this round.
            self._channel.basic_ack(ack_up_to, multiple=True)
        if self.max_messages is not None and self.handled >= self.max_messages:
            self.stop()

    def _carry_out(self, delivery: _Delivery, outcome: Outcome, settlement: Settlement) -> None:
        if settlement.verdict is Verdict.REQUEUED:
            delivery.channel.basic_nack(delivery.tag, requeue=True)
        elif settlement.queue is not None:
            self._republish(delivery.channel, delivery, outcome, settlement.queue)
            if settlement.verdict is Verdict.DEAD_LETTERED:
                _log_dead_letter(outcome, delivery)

    def _event_label(self, outcome: Outcome) -> str:
        # Only subscribed types become labels: hostile input must not mint new series.
        event = outcome.envelope.type if outcome.envelope else ""
        return event if event in self.subscriptions else "(other)"

    def healthy(self) -> bool:
        """Connected and not stopping: what a container liveness probe should see."""
        conn = self._connection
        return conn is not None and conn.is_open and not self._stop.is_set()

    def _republish(self, channel: Any, delivery: _Delivery, outcome: Outcome, queue: str) -> None:
        source = delivery.properties
        headers = dict(source.headers or {})
        now = datetime.now(UTC).isoformat()
        headers.setdefault(_HEADER + "routing-key", delivery.routing_key)
        headers.setdefault(_HEADER + "first-failure", now)
        headers.update(
            {
                ATTEMPT_HEADER: delivery.attempt + 1,
                _HEADER + "attempts": delivery.attempt,
                _HEADER + "last-failure": now,
                _HEADER + "reason": outcome.reason,
                _HEADER + "error": outcome.detail[:_ERROR_TEXT_LIMIT],
                _HEADER + "exception": outcome.exception,
                _HEADER + "queue": delivery.topology.queue,
            }
        )
        if source.user_id:
            headers[_HEADER + "user-id"] = source.user_id
        copied = {name: getattr(source, name) for name in _COPIED}
        # Our own user, which the broker verifies: dispatch trusts x-broadcaster-user-id
        # only on a message this service's daemon put back (REQUIRE_USER_ID).
        props = pika.BasicProperties(headers=headers, delivery_mode=2, user_id=self.settings.broker_user, **copied)
        props = properties.encodable(props, self._frame_max)
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
            publisher.flush(self.settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("consume_signals: %s at shutdown", exc)

    # -- the receivers' thread -----------------------------------------------------

    def _handle(self, delivery: _Delivery) -> _Finished:
        """Run the receivers of one delivery; never raises."""
        started = time.perf_counter()
        self._housekeeping.before_delivery()
        confirmed = True
        try:
            outcome = self._dispatch(delivery)
            if outcome.action is Action.ACK:
                confirmed = self._flush_caused_events(outcome)
        except Exception as exc:  # nothing a message carries may stop the daemon
            logger.exception("consume_signals: unexpected error handling delivery %s", delivery.tag)
            outcome = internal_error(exc)
        return _Finished(delivery, outcome, confirmed, time.perf_counter() - started)

    def _dispatch(self, delivery: _Delivery) -> Outcome:
        reason = properties.undecodable(delivery.properties)
        if reason is not None:
            return Outcome(
                Action.DEAD_LETTER,
                reason="undecodable",
                detail=f"the message's properties cannot be decoded ({reason}); its headers are lost",
            )
        return dispatch(
            delivery.properties,
            delivery.body,
            settings=self.settings,
            subscriptions=self.subscriptions,
            attempt=delivery.attempt,
        )

    def _flush_caused_events(self, outcome: Outcome) -> bool:
        # Events the receivers fired must be safe at the broker before the message that
        # caused them is acked, or a crash in between would lose them.
        try:
            publisher.flush(self.settings.publish_timeout)
        except FlushTimeout as exc:
            envelope = outcome.envelope
            logger.error(
                "events caused by %s were not confirmed (%s); requeueing it",
                envelope and envelope.id,
                exc,
            )
            return False
        return True

    def _on_finished(self, finished: _Finished) -> None:
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
        reason="internal-error",
        detail=f"{type(exc).__qualname__}: {exc}"[:_ERROR_TEXT_LIMIT],
        exception=f"{type(exc).__module__}.{type(exc).__qualname__}",
    )


@dataclass(frozen=True, slots=True)
class _Delivery:
    topology: Topology
    channel: Any
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class _Finished:
    delivery: _Delivery
    outcome: Outcome
    confirmed: bool  # the events the receivers fired are confirmed by the broker
    seconds: float


class _Receivers:
    """The thread that runs receivers, one delivery at a time, in the order they arrived."""

    def __init__(self, handle: Any, on_finished: Any) -> None:
        self._handle = handle
        self._on_finished = on_finished
        self._jobs: deque[_Delivery] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._current: tuple[_Delivery, float] | None = None
        self._reported: _Delivery | None = None
        self._thread = threading.Thread(target=self._run, name="broadcaster-receivers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, delivery: _Delivery) -> None:
        with self._cond:
            self._jobs.append(delivery)
            self._cond.notify()

    @property
    def busy(self) -> bool:
        """A delivery is being handled or waits to be."""
        with self._cond:
            return self._current is not None or bool(self._jobs)

    def discard_queued(self) -> None:
        """Forget the deliveries not started (their channel is going; they come back)."""
        with self._cond:
            self._jobs.clear()

    def wait_idle(self, stop: threading.Event) -> None:
        """Wait until no delivery is being handled, or `stop` is set."""
        with self._cond:
            while self._current is not None and not stop.is_set():
                self._cond.wait(0.1)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._jobs.clear()
            self._cond.notify_all()

    def report_long_running(self, limit: float) -> None:
        """Log once a delivery whose receivers have run for `limit` seconds (CONSUMER_TIMEOUT)."""
        current = self._current
        if current is None or current[0] is self._reported or time.monotonic() - current[1] < limit:
            return
        self._reported = current[0]
        logger.warning(
            "consume_signals: the receivers of %s have run for more than %g s (CONSUMER_TIMEOUT): "
            "the broker's consumer_timeout will close the channel and redeliver it",
            current[0].properties.message_id or f"delivery {current[0].tag}",
            limit,
        )

    def _run(self) -> None:
        try:
            while (delivery := self._next()) is not None:
                finished = self._handle(delivery)
                with self._cond:
                    self._current = None
                    self._cond.notify_all()
                self._on_finished(finished)
        finally:
            connections.close_all()  # this thread's database connections

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            delivery = self._jobs.popleft()
            self._current = (delivery, time.monotonic())
            return delivery


class _Housekeeping:
    """Database upkeep between deliveries, on the receivers' thread."""

    def __init__(self, settings: BroadcasterSettings, subscriptions: Mapping[str, Subscription]) -> None:
        self._settings = settings
        self._inbox = any(sub.inbox for sub in subscriptions.values())
        self._connections_checked = 0.0
        self._next_prune = 0.0

    def before_delivery(self) -> None:
        now = time.monotonic()
        # As Django does around each request (at most once a second here): a daemon lives
        # for days, its DB connections must not.
        if now - self._connections_checked >= 1.0:
            close_old_connections()
            self._connections_checked = now
        if self._inbox and now >= self._next_prune:
            self._prune_inbox(now)

    def _prune_inbox(self, now: float) -> None:
        from broadcaster import inbox  # noqa: PLC0415 - models load only once apps are ready

        try:
            pruned = inbox.prune(self._settings.inbox_retention)
        except Exception as exc:  # a database hiccup must not stop the daemon
            self._next_prune = now + _INBOX_PRUNE_RETRY
            logger.warning("consume_signals: inbox prune failed (%s); trying again in %g s", exc, _INBOX_PRUNE_RETRY)
            close_old_connections()
            return
        self._next_prune = now + _INBOX_PRUNE_EVERY
        if pruned:
            logger.info("consume_signals: pruned %d inbox row(s) older than INBOX_RETENTION", pruned)


def _attempt(properties: pika.BasicProperties) -> int:
    value = (properties.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000 else 1


def _log_dead_letter(outcome: Outcome, delivery: _Delivery) -> None:
    envelope, props = outcome.envelope, delivery.properties
    logger.error(
        "dead-lettered %s %s after %d attempt(s): %s: %s",
        envelope.type if envelope else props.type or "(unknown event)",
        envelope.id if envelope else props.message_id or "(no id)",
        delivery.attempt,
        outcome.reason,
        outcome.detail[:200],
    )

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
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from django.db import close_old_connections, connections

from broadcaster import connection, failures, observability, properties, publisher
from broadcaster.connection import describe
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.failures import Reason
from broadcaster.registry import Subscription
from broadcaster.scheduler import AckWindow, Lanes
from broadcaster.settings import BroadcasterSettings
from broadcaster.settlement import Settlement, Verdict, settle
from broadcaster.topology import Partitions, Topology

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

_INBOX_PRUNE_EVERY = 3600.0
_FAILURE_RESERVE = 4096  # bytes of failure headers a copy adds (the error text is at most 1,000 characters)
_INBOX_PRUNE_RETRY = 60.0  # after a database error
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
        self._frame_max = connection.parameters(settings, "consumer").frame_max
        self._submitted = 0
        self._finished: deque[_Finished] = deque()
        self._wake_pending = False
        self._acks = AckWindow()
        self._receivers = _Receivers(self._handle, self._on_finished, self.concurrency)
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
            self._connect()
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
        failures = 0
        while not self._stop.is_set():
            try:
                if self._connection is None:
                    # A receiver still running holds a delivery of the lost channel; let it
                    # finish before its redelivery can arrive, so it does not run twice at once.
                    self._receivers.wait_idle(self._stop)
                    self._connect()
                    failures = 0
                    logger.info("consume_signals: reconnected to %s", self.settings.redacted_broker_url)
                assert self._connection is not None  # connected just above
                self._connection.process_data_events(time_limit=_POLL)
                self._settle_finished()
                self._receivers.report_long_running(self.settings.consumer_timeout)
            except (*_CONNECTION_ERRORS, *_COPY_REFUSED, BrokerUnavailable) as exc:
                failures += 1
                self._drop_connection()
                delay = connection.backoff(failures, self.settings.reconnect_max_delay)
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

    def _connect(self) -> None:
        params = connection.parameters(self.settings, "consumer")
        try:
            conn = pika.BlockingConnection(params)
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(
                f"cannot connect to the broker at {self.settings.redacted_broker_url}: {describe(exc)}"
            ) from exc
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
        delivery = _Delivery(topology, channel, method.delivery_tag, method.routing_key, props, body, attempt, lane)
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

    def _carry_out(self, delivery: _Delivery, finished: _Finished, settlement: Settlement) -> None:
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

    def _republish(self, channel: Any, delivery: _Delivery, finished: _Finished, queue: str) -> None:
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
            publisher.flush(self.settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("consume_signals: %s at shutdown", exc)

    # -- the receivers' thread -----------------------------------------------------

    def _handle(self, delivery: _Delivery) -> _Finished:
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
                    return _Finished(delivery, outcome, False, time.perf_counter() - started, attempt, True)
                attempt += 1
                outcome = self._dispatch(delivery, attempt)
            if outcome.action is Action.ACK:
                confirmed = self._flush_caused_events(outcome)
        except Exception as exc:  # nothing a message carries may stop the daemon
            logger.exception("consume_signals: unexpected error handling delivery %s", delivery.tag)
            outcome = internal_error(exc)
        return _Finished(delivery, outcome, confirmed, time.perf_counter() - started, attempt)

    def _retry_in_place(self, delivery: _Delivery, outcome: Outcome, attempt: int) -> bool:
        return (
            outcome.action is Action.RETRY
            and delivery.topology.in_place_retries
            and attempt < self.settings.max_attempts
            and not self._stop.is_set()
        )

    def _dispatch(self, delivery: _Delivery, attempt: int) -> Outcome:
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
        reason=Reason.INTERNAL_ERROR,
        detail=f"{type(exc).__qualname__}: {exc}"[: failures.ERROR_TEXT_LIMIT],
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
    lane: str | None = None  # the partition key of an ordered event: one at a time per key


@dataclass(frozen=True, slots=True)
class _Finished:
    delivery: _Delivery
    outcome: Outcome
    confirmed: bool  # the events the receivers fired are confirmed by the broker
    seconds: float
    attempt: int = 1  # the last attempt (an ordered event is retried in place)
    abandoned: bool = False  # stopped while waiting to retry: left unacked


class _Receivers:
    """The worker threads that run receivers: at most one delivery per partition key at a time."""

    def __init__(self, handle: Any, on_finished: Any, concurrency: int = 1) -> None:
        self._handle = handle
        self._on_finished = on_finished
        self._lanes: Lanes[_Delivery] = Lanes()
        self._cond = threading.Condition()
        self._stopping = False
        self._running: dict[int, tuple[_Delivery, float]] = {}
        self._reported: set[int] = set()
        self._threads = [
            threading.Thread(target=self._run, name=f"broadcaster-receivers-{index}", daemon=True)
            for index in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, delivery: _Delivery) -> None:
        with self._cond:
            self._lanes.add(delivery, delivery.lane)
            self._cond.notify()

    @property
    def busy(self) -> bool:
        """A delivery is being handled or waits to be."""
        with self._cond:
            return bool(self._running) or bool(len(self._lanes))

    def discard_queued(self) -> None:
        """Forget the deliveries not started (their channel is going; they come back)."""
        with self._cond:
            self._lanes.clear()

    def wait_idle(self, stop: threading.Event) -> None:
        """Wait until no delivery is being handled, or `stop` is set."""
        with self._cond:
            while self._running and not stop.is_set():
                self._cond.wait(0.1)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._lanes.clear()
            self._cond.notify_all()

    def report_long_running(self, limit: float) -> None:
        """Log once each delivery whose receivers have run for `limit` seconds (CONSUMER_TIMEOUT)."""
        now = time.monotonic()
        with self._cond:
            late = [
                d for key, (d, since) in self._running.items() if now - since >= limit and key not in self._reported
            ]
            self._reported.update(id(delivery) for delivery in late)
        for delivery in late:
            logger.warning(
                "consume_signals: the receivers of %s have run for more than %g s (CONSUMER_TIMEOUT): "
                "the broker's consumer_timeout will close the channel and redeliver it",
                delivery.properties.message_id or f"delivery {delivery.tag}",
                limit,
            )

    def _run(self) -> None:
        try:
            while (delivery := self._next()) is not None:
                finished = self._handle(delivery)
                with self._cond:
                    self._running.pop(id(delivery), None)
                    self._reported.discard(id(delivery))
                    self._lanes.done(delivery.lane)
                    self._cond.notify_all()
                self._on_finished(finished)
        finally:
            connections.close_all()  # this thread's database connections

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._stopping and (delivery := self._lanes.take()) is None:
                self._cond.wait()
            if self._stopping or delivery is None:
                return None
            self._running[id(delivery)] = (delivery, time.monotonic())
            return delivery


class _Housekeeping:
    """Database upkeep between deliveries, on the receivers' thread."""

    def __init__(self, settings: BroadcasterSettings, subscriptions: Mapping[str, Subscription]) -> None:
        self._settings = settings
        self._inbox = any(sub.inbox for sub in subscriptions.values())
        self._checked = threading.local()
        self._prune_lock = threading.Lock()
        self._next_prune = 0.0

    def before_delivery(self) -> None:
        now = time.monotonic()
        # As Django does around each request (at most once a second per thread here): a
        # daemon lives for days, its DB connections must not.
        if now - getattr(self._checked, "at", 0.0) >= 1.0:
            close_old_connections()
            self._checked.at = now
        if self._inbox and now >= self._next_prune and self._prune_lock.acquire(blocking=False):
            try:
                self._prune_inbox(now)
            finally:
                self._prune_lock.release()

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


def _lane(props: pika.BasicProperties) -> str | None:
    key = (props.headers or {}).get("ce-partitionkey")
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    return key if isinstance(key, str) and key else None


def _name(outcome: Outcome, delivery: _Delivery) -> str:
    envelope, props = outcome.envelope, delivery.properties
    event = envelope.type if envelope else props.type or "(unknown event)"
    return f"{event} {envelope.id if envelope else props.message_id or '(no id)'}"


def _log_dead_letter(outcome: Outcome, delivery: _Delivery, attempt: int) -> None:
    name, detail = _name(outcome, delivery), outcome.detail[:200]
    logger.error("dead-lettered %s after %d attempt(s): %s: %s", name, attempt, outcome.reason, detail)

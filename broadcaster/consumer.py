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
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.exceptions

from broadcaster import connection, failures, observability, pikacompat, properties, transport
from broadcaster.connection import describe
from broadcaster.control import Control
from broadcaster.dispatch import Action, Outcome
from broadcaster.exceptions import CONNECTION_LOST as _CONNECTION_ERRORS
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.executor import Executor
from broadcaster.killswitch import KillSwitch, Limits
from broadcaster.registry import Subscription
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import ServiceQueues, Topology
from broadcaster.workers import Delivery, Finished, Handling, Receivers, lane_of

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

_POLL = 1  # seconds the connection's thread waits for I/O when nothing happens
_CONNECT_TIME = 60  # seconds a connection attempt to every node may take before the loop counts as stuck
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
        self.queues = ServiceQueues.for_subscriptions(settings, self.subscriptions)
        self.concurrency = concurrency or settings.concurrency
        # Enough messages in hand to keep every worker busy while the last ones are acked.
        self.prefetch = prefetch or max(settings.prefetch, 2 * self.concurrency)
        self.max_messages = max_messages
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._link = _Link(settings, self.prefetch)
        self._executor = Executor(settings, self._link.frame_max)
        self._submitted = 0
        self._finished: deque[Finished] = deque()
        self._wake_pending = False
        self._handle = Handling(settings, self.subscriptions, self._stop)
        self._receivers = Receivers(self._handle, self._on_finished, self.concurrency)
        self.control = Control(
            settings, KillSwitch(Limits.for_settings(settings)), self._consume_queues, self._return_queued
        )
        self._running = False
        self._turned = time.monotonic()  # the last turn of the connection's loop, for /healthz

    @property
    def topology(self) -> Topology:
        """The service queue's objects, shared by every daemon of the service."""
        return self.queues.service

    @property
    def instance_topology(self) -> Topology | None:
        """This daemon's own queue, with fanout="instance" subscriptions (it may move: see _attach)."""
        return self.queues.instance

    @property
    def connections_opened(self) -> int:
        return self._link.opened

    @property
    def connected(self) -> bool:
        """Connected to a node (consuming, unless paused)."""
        return self._link.is_open

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
        self._running = True
        try:
            self._link.open_first(self._attach)
            self._log_start()
            self._consume()
            self._finish_in_hand()
        finally:
            self._running = False
            self._receivers.stop()
            self._close()
        logger.info("consume_signals: stopped after %d message(s) (%s)", self.handled, self._summary())

    def _log_start(self) -> None:
        logger.info(
            "consume_signals: started service=%s queue=%s events=%s broker=%s prefetch=%d concurrency=%d pid=%d",
            self.settings.service_name,
            ",".join(topology.queue for topology in (self.topology, self.instance_topology) if topology)
            + (f" (+{self.queues.partitions.count} partitions)" if self.queues.partitions else ""),
            ",".join(sorted(self.subscriptions)) or "-",
            self.settings.redacted_broker_url,
            self.prefetch,
            self.concurrency,
            os.getpid(),
        )

    def _consume(self) -> None:
        while not self._stop.is_set():
            self._turned = time.monotonic()
            try:
                if self._link.connection is None:
                    # A receiver still running holds a delivery of the lost channel; let it
                    # finish before its redelivery can arrive, so it does not run twice at once.
                    self._receivers.wait_idle(self._stop)
                    node = self._link.open(self._attach)
                    logger.info("consume_signals: reconnected to %s", node.label)
                assert self._link.connection is not None  # connected just above
                self._link.connection.process_data_events(time_limit=_POLL)
                self._settle_finished()
                self.control.apply()
                self._receivers.report_long_running(self.settings.consumer_timeout)
            except (*_CONNECTION_ERRORS, *_COPY_REFUSED, BrokerUnavailable) as exc:
                self._drop_connection()
                # The next node at once; the back-off only once every node failed in turn.
                delay = self._link.nodes.failed()
                logger.warning("consume_signals: connection lost (%s); retrying in %.1f s", describe(exc), delay)
                self._stop.wait(delay)

    def _finish_in_hand(self) -> None:
        # The delivery whose receivers are running is finished and acked; deliveries not
        # started stay unacked and go back to the queue when the channel closes.
        self._receivers.discard_queued()
        while self._receivers.busy and self._link.connection is not None:
            try:
                self._link.connection.process_data_events(time_limit=0.1)  # type: ignore[arg-type]  # the stubs say int; pika takes a float
            except (*_CONNECTION_ERRORS, BrokerUnavailable):
                self._drop_connection()
        try:
            self._settle_finished()
        except (*_CONNECTION_ERRORS, *_COPY_REFUSED):
            self._drop_connection()

    def _summary(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in sorted(self.counts.items())) or "none"

    def _attach(self, conn: pika.BlockingConnection, channel: Any) -> None:
        """On a new channel: declare the topology, then consume (unless paused)."""
        try:
            self.queues.declare(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            instance = self.instance_topology
            if instance is None or not _home_node_down(exc, instance.queue):
                raise
            self.queues = self.queues.moved_instance(self.settings)
            moved = self.queues.instance
            assert moved is not None
            raise BrokerUnavailable(
                f"the node holding instance queue {instance.queue} is down; this daemon moves to instance queue "
                f"{moved.queue} (events left in the old one are lost when it expires, "
                f"INSTANCE_QUEUE_EXPIRES after its node is back)"
            ) from exc
        self._executor.attach(channel)
        self.control.attach(conn, channel)

    def _consume_queues(self, channel: Any) -> list[str]:
        return [
            channel.basic_consume(topology.queue, functools.partial(self._on_message, topology))
            for topology in self.queues.consumed
        ]

    def _return_queued(self) -> None:
        # Paused: what arrived but did not start goes back to the queue (running ones finish).
        channel = self._link.channel
        tags = [delivery.tag for delivery in self._receivers.take_queued() if delivery.channel is channel]
        for tag in tags:
            channel.basic_nack(tag, requeue=True)
        self._executor.ack(tags, frozenset(tags))
        self._submitted -= len(tags)

    # -- the connection's thread ---------------------------------------------------

    def _on_message(
        self, topology: Topology, channel: Any, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        if self._stop.is_set() or (self.max_messages is not None and self._submitted >= self.max_messages):
            return  # left unacked: the broker redelivers it when the channel closes
        self._submitted += 1
        lane = lane_of(props) if topology.in_place_retries else None
        attempt = failures.attempt(props, body, self.settings)  # believed only on our own sealed copies
        delivery = Delivery(topology, channel, method.delivery_tag, method.routing_key, props, body, attempt, lane)
        self._executor.delivered(method.delivery_tag)
        self._receivers.submit(delivery)

    def _settle_finished(self) -> None:
        """Carry out the verdicts on every delivery whose receivers finished, and ack them."""
        self._wake_pending = False
        batch = [self._finished.popleft() for _ in range(len(self._finished))]  # workers append meanwhile
        for finished, verdict in self._executor.settle(batch):
            outcome = finished.outcome
            if outcome.action is not Action.DEAD_LETTER:  # bad input says nothing of the receivers' health
                self.control.record(outcome.action is Action.RETRY)
            self.counts[verdict.value] += 1
            label = self._event_label(outcome)
            observability.handled(outcome.envelope, label, verdict.value, outcome.reason, finished.seconds)
        if self.control.switch.paused and self.control.consuming:
            self.control.apply()  # tripped just now: stop taking more at once
        if self.max_messages is not None and self.handled >= self.max_messages:
            self.stop()

    def _event_label(self, outcome: Outcome) -> str:
        # Only subscribed types become labels: hostile input must not mint new series.
        event = outcome.envelope.type if outcome.envelope else ""
        return event if event in self.subscriptions else "(other)"

    def healthy(self) -> bool:
        """Connected and not stopping."""
        return self._link.is_open and not self._stop.is_set()

    def live(self) -> tuple[bool, dict[str, Any]]:
        """/healthz: running, and its loop turned lately (reconnecting waits at most RECONNECT_MAX_DELAY)."""
        since = time.monotonic() - self._turned
        stuck = since > _POLL + self.settings.reconnect_max_delay + _CONNECT_TIME
        details = {"running": self._running, "loop_seconds_ago": round(since, 1), **self.control.status()}
        return self._running and not stuck, details

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """/readyz: connected and consuming (not paused)."""
        status = self.control.status()
        return self.healthy() and status["consuming"], {"connected": self.healthy(), **status}

    def _drop_connection(self) -> None:
        # Unsent acks die with the channel: the broker redelivers those messages.
        self._receivers.discard_queued()
        self.control.detach()
        self._link.close()

    def _close(self) -> None:
        if self._link.connection is not None:
            try:
                if self._link.channel is not None and self._link.channel.is_open:
                    self.control.cancel()
            except _CONNECTION_ERRORS:
                pass
            self._drop_connection()
        try:
            transport.flush(self.settings.shutdown_timeout)
        except FlushTimeout as exc:
            logger.error("consume_signals: %s at shutdown", exc)

    def _on_finished(self, finished: Finished) -> None:
        # On the receivers' thread: hand the result to the connection's thread and wake it,
        # once per batch of results, so the ack goes out now rather than at the next poll.
        self._finished.append(finished)
        conn = self._link.connection
        if self._wake_pending or conn is None:
            return
        self._wake_pending = True
        try:
            conn.add_callback_threadsafe(self._settle_finished)
        except Exception:  # a closed connection: the main loop drops the result
            self._wake_pending = False


def _home_node_down(exc: pika.exceptions.ChannelClosedByBroker, queue: str) -> bool:
    """Whether the broker refused to declare `queue` because the node of that classic queue is down."""
    text = str(exc.reply_text)
    return exc.reply_code == 404 and "home node" in text and f"queue '{queue}'" in text


class _Link:
    """The daemon's connection and channel, to one node of BROKER_URL at a time."""

    def __init__(self, settings: BroadcasterSettings, prefetch: int) -> None:
        self.nodes = connection.Nodes(settings, "consumer")
        self.prefetch = prefetch
        self.connection: pika.BlockingConnection | None = None
        self.channel: Any = None
        self.opened = 0

    @property
    def frame_max(self) -> int:
        return int(self.nodes.all[0].params.frame_max)

    @property
    def is_open(self) -> bool:
        conn = self.connection
        return conn is not None and bool(conn.is_open)

    def open_first(self, attach: Callable[[pika.BlockingConnection, Any], None]) -> None:
        """Every node once; a daemon none of them answers stops at once (see Consumer.run())."""
        for tried in range(1, len(self.nodes.all) + 1):
            try:
                self.open(attach)
                return
            except BrokerUnavailable as exc:
                if tried == len(self.nodes.all):
                    raise
                logger.warning("consume_signals: %s; trying the next node", exc)
                self.nodes.failed()

    def open(self, attach: Callable[[pika.BlockingConnection, Any], None]) -> connection.Node:
        """Connect to the next node, open a channel with confirms and the prefetch, `attach`; return the node."""
        node = self.nodes.next()
        try:
            conn = pikacompat.blocking_connection(node.params)
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to the broker at {node.label}: {describe(exc)}") from exc
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.prefetch)
            attach(conn, channel)
        except Exception:
            connection.close_quietly(conn)
            raise
        self.opened += 1
        self.nodes.connected(node)
        self.connection, self.channel = conn, channel  # last: `connected` means all of the above
        return node

    def close(self) -> None:
        conn, self.connection, self.channel = self.connection, None, None
        if conn is not None:
            connection.close_quietly(conn)

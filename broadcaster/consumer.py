"""The consumer daemon: one service queue in, local signals out.

A message is acknowledged only after its receivers ran and the events they caused were
confirmed by the broker. A receiver that raises sends the message to the next delay
queue; after the last attempt, or at once for a message that can never succeed, it is
copied to the dead-letter queue with the reason in headers, and only then acked.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from django.db import close_old_connections

from broadcaster import connection, failures, observability, publisher
from broadcaster.connection import describe
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.exceptions import BrokerUnavailable, FlushTimeout
from broadcaster.registry import Subscription
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Topology

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)

_INBOX_PRUNE_EVERY = 3600.0
_CONNECTION_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    OSError,
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
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._last_prune: float | None = None
        self._consumer_tags: list[str] = []
        self._ack_up_to: int | None = None
        self._connections_checked = 0.0

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
        self._connect()
        logger.info(
            "consume_signals: started service=%s queue=%s events=%s broker=%s prefetch=%d pid=%d",
            self.settings.service_name,
            ",".join(topology.queue for topology, _ in self._bindings),
            ",".join(sorted(self.subscriptions)) or "-",
            self.settings.redacted_broker_url,
            self.prefetch,
            os.getpid(),
        )
        failures = 0
        while not self._stop.is_set():
            self._prune_inbox_now_and_then()
            try:
                if self._connection is None:
                    self._connect()
                    failures = 0
                    logger.info("consume_signals: reconnected to %s", self.settings.redacted_broker_url)
                assert self._connection is not None  # connected just above
                self._connection.process_data_events(time_limit=1)
                self._ack_handled()
            except (*_CONNECTION_ERRORS, BrokerUnavailable) as exc:
                failures += 1
                self._drop_connection()
                delay = connection.backoff(failures, self.settings.reconnect_max_delay)
                logger.warning("consume_signals: connection lost (%s); retrying in %.1f s", describe(exc), delay)
                self._stop.wait(delay)
        self._close()
        logger.info("consume_signals: stopped after %d message(s) (%s)", self.handled, self._summary())

    def _prune_inbox_now_and_then(self) -> None:
        if not any(sub.inbox for sub in self.subscriptions.values()):
            return
        now = time.monotonic()
        if self._last_prune is not None and now - self._last_prune < _INBOX_PRUNE_EVERY:
            return
        self._last_prune = now
        from broadcaster import inbox  # noqa: PLC0415 - models load only once apps are ready

        if pruned := inbox.prune(self.settings.inbox_retention):
            logger.info("consume_signals: pruned %d inbox row(s) older than INBOX_RETENTION", pruned)

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
            self._consumer_tags = []
            for topology, events in self._bindings:
                topology.declare(channel, events)
                callback = functools.partial(self._on_message, topology)
                self._consumer_tags.append(channel.basic_consume(topology.queue, callback))
        except Exception:
            connection.close_quietly(conn)
            raise
        self._connection, self._channel = conn, channel

    def _on_message(
        self, topology: Topology, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        if self._stop.is_set():
            return  # left unacked: the broker redelivers it when the channel closes
        # As Django does around each request (at most once a second here): a daemon lives
        # for days, its DB connections must not.
        now = time.monotonic()
        if now - self._connections_checked >= 1.0:
            close_old_connections()
            self._connections_checked = now
        started = time.perf_counter()
        delivery = _Delivery(topology, method, properties, body, _attempt(properties, body, self.settings))
        outcome = dispatch(
            properties, body, settings=self.settings, subscriptions=self.subscriptions, attempt=delivery.attempt
        )
        result = self._settle(channel, delivery, outcome)
        self.counts[result] += 1
        observability.handled(
            outcome.envelope, self._event_label(outcome), result, outcome.reason, time.perf_counter() - started
        )
        if self.max_messages is not None and self.handled >= self.max_messages:
            self.stop()

    def _settle(self, channel: Any, delivery: _Delivery, outcome: Outcome) -> str:
        """Ack, retry or dead-letter one message; return which."""
        tag, topology = delivery.method.delivery_tag, delivery.topology
        if outcome.action is Action.ACK and not self._flush_caused_events(outcome):
            channel.basic_nack(tag, requeue=True)
            return "requeued"
        if outcome.action is Action.RETRY and delivery.attempt <= len(topology.retry_queues):
            self._republish(channel, delivery, outcome, topology.retry_queues[delivery.attempt - 1])
            result = "retried"
        elif outcome.action is not Action.ACK:
            self._republish(channel, delivery, outcome, topology.dead_letter_queue)
            _log_dead_letter(outcome, delivery)
            result = "dead-lettered"
        else:
            result = "acked"
        # Acked with the others of this round by _ack_handled(): one ack frame per round
        # instead of one write per message. Still after the receivers ran, so a crash
        # before it means a redelivery, never a loss.
        self._ack_up_to = tag
        return result

    def _ack_handled(self) -> None:
        tag, self._ack_up_to = self._ack_up_to, None
        if tag is not None and self._channel is not None and self._channel.is_open:
            self._channel.basic_ack(tag, multiple=True)

    def _event_label(self, outcome: Outcome) -> str:
        # Only subscribed types become labels: hostile input must not mint new series.
        event = outcome.envelope.type if outcome.envelope else ""
        return event if event in self.subscriptions else "(other)"

    def healthy(self) -> bool:
        """Connected and not stopping: what a container liveness probe should see."""
        conn = self._connection
        return conn is not None and conn.is_open and not self._stop.is_set()

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

    def _republish(self, channel: Any, delivery: _Delivery, outcome: Outcome, queue: str) -> None:
        # A sealed copy under our own broker user: the next delivery believes its attempt
        # count and its original publisher (broadcaster.failures), and nothing else does.
        props = failures.failure_properties(
            delivery.properties,
            delivery.body,
            self.settings,
            attempt=delivery.attempt,
            reason=outcome.reason,
            error=outcome.detail,
            exception=outcome.exception,
            queue=delivery.topology.queue,
            routing_key=delivery.method.routing_key,
        )
        channel.basic_publish(delivery.topology.requeue_exchange, queue, delivery.body, props, mandatory=True)

    def _drop_connection(self) -> None:
        # Unsent acks die with the channel: the broker redelivers those messages.
        self._ack_up_to = None
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            connection.close_quietly(conn)

    def _close(self) -> None:
        conn = self._connection
        if conn is None:
            return
        try:
            self._ack_handled()
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


@dataclass(frozen=True, slots=True)
class _Delivery:
    topology: Topology
    method: Any
    properties: pika.BasicProperties
    body: bytes
    attempt: int


def _attempt(properties: pika.BasicProperties, body: bytes, settings: BroadcasterSettings) -> int:
    # Only a copy this service sealed may say it is a later attempt.
    return failures.attempt(properties, body, settings)


def _log_dead_letter(outcome: Outcome, delivery: _Delivery) -> None:
    envelope, properties = outcome.envelope, delivery.properties
    logger.error(
        "dead-lettered %s %s after %d attempt(s): %s: %s",
        envelope.type if envelope else properties.type or "(unknown event)",
        envelope.id if envelope else properties.message_id or "(no id)",
        delivery.attempt,
        outcome.reason,
        outcome.detail[:200],
    )

"""The consumer daemon's worker threads: they run receivers while the connection's thread talks to the broker.

`Receivers` is a pool of CONCURRENCY threads fed deliveries in arrival order; ordered
events of one partition key run one at a time (`broadcaster.scheduler.Lanes`). Each
finished delivery goes back to the connection's thread through the callback it was
given. `Handling` is what a worker does with one delivery (dispatch, retries in place,
waiting for the events it caused), and `Housekeeping` the database upkeep between two.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pika
from django.db import close_old_connections, connections

from broadcaster import failures, properties, transport
from broadcaster.dispatch import Action, Outcome, dispatch
from broadcaster.exceptions import FlushTimeout
from broadcaster.failures import Reason
from broadcaster.registry import Subscription
from broadcaster.scheduler import Lanes
from broadcaster.settings import BroadcasterSettings
from broadcaster.topology import Topology

__all__ = [
    "Delivery",
    "Finished",
    "Handling",
    "Housekeeping",
    "Receivers",
    "describe_delivery",
    "internal_error",
    "lane_of",
]

logger = logging.getLogger("broadcaster.consumer")

_INBOX_PRUNE_EVERY = 3600.0
_INBOX_PRUNE_RETRY = 60.0  # after a database error


# Delivery and Finished are made for every message, and not changed once made; they are
# not frozen because a frozen dataclass's __init__ costs about four times as much.
@dataclass(slots=True)
class Delivery:
    topology: Topology
    channel: Any
    tag: int
    routing_key: str
    properties: pika.BasicProperties
    body: bytes
    attempt: int
    lane: str | None = None  # the partition key of an ordered event: one at a time per key


@dataclass(slots=True)
class Finished:
    delivery: Delivery
    outcome: Outcome
    confirmed: bool  # the events the receivers fired are confirmed by the broker
    seconds: float
    attempt: int = 1  # the last attempt (an ordered event is retried in place)
    abandoned: bool = False  # stopped while waiting to retry: left unacked


class Receivers:
    """The worker threads that run receivers: at most one delivery per partition key at a time."""

    def __init__(
        self, handle: Callable[[Delivery], Finished], on_finished: Callable[[Finished], None], concurrency: int = 1
    ) -> None:
        self._handle = handle
        self._on_finished = on_finished
        self._lanes: Lanes[Delivery] = Lanes()
        self._cond = threading.Condition()
        self._stopping = False
        self._running: dict[int, tuple[Delivery, float]] = {}
        self._reported: set[int] = set()
        self._threads = [
            threading.Thread(target=self._run, name=f"broadcaster-receivers-{index}", daemon=True)
            for index in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, delivery: Delivery) -> None:
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

    def take_queued(self) -> list[Delivery]:
        """Take back the deliveries not started, to hand them back to the broker."""
        with self._cond:
            return self._lanes.drain()

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
            delivery = self._next(None)
            while delivery is not None:
                self._on_finished(self._handle(delivery))
                delivery = self._next(delivery)
        finally:
            connections.close_all()  # this thread's database connections

    def _next(self, done: Delivery | None) -> Delivery | None:
        """Mark `done` finished (its key's next delivery may run), then wait for the next one.

        One pass under the lock for both: it is taken twice per message otherwise.
        """
        with self._cond:
            if done is not None:
                self._running.pop(id(done), None)
                self._reported.discard(id(done))
                self._lanes.done(done.lane)
                self._cond.notify_all()  # wait_idle(), and workers waiting for that key
            while not self._stopping and (delivery := self._lanes.take()) is None:
                self._cond.wait()
            if self._stopping or delivery is None:
                return None
            self._running[id(delivery)] = (delivery, time.monotonic())
            return delivery


class Handling:
    """What a worker thread does with one delivery: `handling(delivery)` never raises."""

    def __init__(
        self, settings: BroadcasterSettings, subscriptions: Mapping[str, Subscription], stop: threading.Event
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self._stop = stop
        self._housekeeping = Housekeeping(settings, subscriptions)

    def __call__(self, delivery: Delivery) -> Finished:
        """Run the receivers of one delivery (retrying in place on a partition)."""
        started = time.perf_counter()
        self._housekeeping.before_delivery()
        confirmed, attempt = True, delivery.attempt
        try:
            outcome = self._dispatch(delivery, attempt)
            while self._retry_in_place(delivery, outcome, attempt):
                delay = self.settings.retry_delays[attempt - 1]
                logger.warning(
                    "consume_signals: retrying %s in place in %g s", describe_delivery(outcome, delivery), delay
                )
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


class Housekeeping:
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


def internal_error(exc: BaseException) -> Outcome:
    """The outcome of an exception nobody foresaw while handling a message: a dead letter."""
    return Outcome(
        Action.DEAD_LETTER,
        reason=Reason.INTERNAL_ERROR,
        detail=f"{type(exc).__qualname__}: {exc}"[: failures.ERROR_TEXT_LIMIT],
        exception=f"{type(exc).__module__}.{type(exc).__qualname__}",
    )


def lane_of(props: pika.BasicProperties) -> str | None:
    """The partition key an ordered event carries: events of one key run one at a time."""
    key = (props.headers or {}).get("ce-partitionkey")
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    return key if isinstance(key, str) and key else None


def describe_delivery(outcome: Outcome, delivery: Delivery) -> str:
    """The event type and id of a delivery, for log lines.

    A message whose envelope could not be read is named by what the broker says of it:
    its routing key, queue and delivery tag (and its AMQP type and message id, quoted, if
    it has them), so that an operator can find it in the dead-letter queue.
    """
    envelope, props = outcome.envelope, delivery.properties
    if envelope is not None:
        return f"{envelope.type} {envelope.id}"
    said = "".join(
        f" {name} {str(value)[:100]!r}" for name, value in (("type", props.type), ("id", props.message_id)) if value
    )
    return (
        f"a message routed as {delivery.routing_key[:200]!r} (queue {delivery.topology.queue}, "
        f"delivery tag {delivery.tag}{';' if said else ''}{said})"
    )

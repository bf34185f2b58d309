"""The transactional outbox: events stored with the business change, published by a relay.

With ``PUBLISH_MODE = "outbox"`` a broadcast signal writes an OutboxEvent row in the
caller's transaction, so the event exists exactly when the change does, whatever the
broker is doing at commit time. A relay publishes unpublished rows in id order with
confirms and stamps them published. It runs in the web process, woken after each
commit, and as ``manage.py relay_outbox``.

The relay never holds a lock that a business write waits for while it waits on the
broker, because a broker outage must not fail the very writes the outbox exists to keep:

- PostgreSQL and MySQL/MariaDB: one transaction per batch takes an advisory lock
  (``pg_try_advisory_xact_lock``; ``GET_LOCK`` around the transaction on MySQL), locks the
  batch's rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, publishes, and stamps them.
  Row locks there block no insert (MySQL's transaction runs READ COMMITTED, which takes
  no gap lock), so send() goes on during an outage. The advisory lock lets one relay of a
  database publish at a time, whatever the number running, so rows leave in commit order,
  and a row is published once unless the broker confirmed it and the stamp was lost.
- SQLite has one write lock for the whole database: a relay that held it across broker
  I/O made every send() fail with "database is locked" during an outage. There the relay
  reads a batch without a transaction, publishes it, and stamps it in a short write
  transaction of its own. Two relays on one SQLite file may both read and publish the
  same rows before either stamps them: each row is then published at least once (and
  may be out of order); run a single relay on SQLite to keep each row to once.

The rows are the source of truth: a batch the broker does not confirm within
PUBLISH_TIMEOUT is dropped from the relay's publisher (which keeps its connection, or
keeps reconnecting) and its rows are tried again; a message of it the broker did take
is then published twice, which at-least-once allows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from broadcaster import connection, observability, relaylock
from broadcaster.envelope import OutboundMessage, envelope_from_headers
from broadcaster.exceptions import PublishError
from broadcaster.models import OutboxEvent
from broadcaster.publisher import Publisher
from broadcaster.settings import BroadcasterSettings, get_settings

__all__ = ["Relay", "publish_again", "stop_web_relay", "store", "wake"]

logger = logging.getLogger(__name__)

_PRUNE_EVERY = 60.0  # seconds between deletions of old published rows


def store(message: OutboundMessage, using: str) -> None:
    """Write `message` as an outbox row on database `using` (inside the caller's transaction)."""
    OutboxEvent.objects.using(using).create(
        event_id=message.envelope.id,
        event_type=message.envelope.type,
        headers=message.envelope.headers(),
        body=message.body,
    )


def publish_again(ids: list[int], using: str = DEFAULT_DB_ALIAS, settings: BroadcasterSettings | None = None) -> int:
    """Publish the outbox rows `ids` now, whatever their state, and wait for the broker's confirms.

    For an operator (the admin's "publish again"): each row keeps its `published_at` and
    `last_error` until this attempt's outcome is known. On success the rows are stamped
    published and their error cleared; on failure their `last_error` says why and
    PublishError is raised. A relay may publish a pending row at the same time: its
    consumers then get it twice, which at-least-once allows. Returns how many were published.
    """
    relay = Relay(settings, using)
    rows = list(OutboxEvent.objects.using(using).filter(pk__in=ids).order_by("id"))
    try:
        relay._publish([_message(row) for row in rows])
    except PublishError as exc:
        relay._record_failure([row.pk for row in rows], exc)
        raise
    finally:
        relay.close()
    OutboxEvent.objects.using(using).filter(pk__in=[row.pk for row in rows]).update(
        published_at=timezone.now(), attempts=F("attempts") + 1, last_error=""
    )
    return len(rows)


class Relay:
    """Publishes the outbox rows of one database with one publisher of its own, for its life.

    The rows are the source of truth: when the broker does not confirm a batch, the
    batch is dropped from the publisher (kept, with its connection) and the rows are
    tried again later (at least once, never lost). `close()` releases the publisher.
    """

    def __init__(self, settings: BroadcasterSettings | None = None, using: str = DEFAULT_DB_ALIAS) -> None:
        self.settings = settings or get_settings()
        self.using = using
        self.published = 0
        self.blocked = False  # the last batch found another relay publishing
        self.turned, self.failing = time.monotonic(), False  # the loop's last turn; its last round failed
        self._publisher: Publisher | None = None
        self._last_prune = 0.0

    def run_once(self) -> int:
        """Publish every unpublished row, batch by batch; return how many were published."""
        total = 0
        while (count := self._relay_batch()) > 0:
            total += count
            if count < self.settings.outbox_batch:
                break
        self._prune_now_and_then()
        observability.set_outbox_backlog(
            OutboxEvent.objects.using(self.using).filter(published_at__isnull=True).count()
        )
        return total

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Relay until `stop` is set, polling every OUTBOX_POLL_INTERVAL or when woken."""
        failures = 0
        while not stop.is_set():
            self.turned, self.failing = time.monotonic(), failures > 0  # for the probes
            try:
                published = self.run_once()
                failures = 0
            except PublishError as exc:
                failures += 1
                published = 0
                logger.warning("relay_outbox: broker did not take the outbox rows (%s); retrying", exc)
            except DatabaseError as exc:
                # A database restart or failover: the rows are safe there; try again later.
                failures += 1
                published = 0
                logger.warning("relay_outbox: database error (%s); retrying", exc)
                connections[self.using].close()
            if published == 0 and not stop.is_set():  # idle, or another relay has the turn
                (wake or stop).wait(_retry_in(failures) if failures else self.settings.outbox_poll_interval)
                if wake is not None:
                    wake.clear()
        self.close()

    def close(self) -> None:
        """Release the broker connection."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            _discard(publisher, self.settings.shutdown_timeout)

    def _relay_batch(self) -> int:
        taken: list[int] = []
        try:
            if connections[self.using].vendor == "sqlite":
                self._relay_unlocked(taken)
            else:
                self._relay_locked(taken)
        except PublishError as exc:
            self._record_failure(taken, exc)
            raise
        self.published += len(taken)
        return len(taken)

    def _relay_locked(self, taken: list[int]) -> None:
        """PostgreSQL, MySQL: the batch's rows stay locked (not the table) until they are stamped."""
        relaylock.require_skip_locked(self.using)
        with relaylock.turn(self.using) as mine:
            self.blocked = not mine
            if mine:
                rows = list(self._pending().select_for_update(skip_locked=True)[: self.settings.outbox_batch])
                taken.extend(row.pk for row in rows)
                if rows:
                    self._publish([_message(row) for row in rows])
                    self._stamp(taken)

    def _relay_unlocked(self, taken: list[int]) -> None:
        """SQLite: read, publish, then stamp in a short write transaction (no lock over broker I/O)."""
        with relaylock.file_turn(self.using) as mine:
            self.blocked = not mine
            if not mine:
                return
            rows = list(self._pending()[: self.settings.outbox_batch])
            taken.extend(row.pk for row in rows)
            if rows:
                self._publish([_message(row) for row in rows])
                with transaction.atomic(using=self.using):
                    self._stamp(taken)

    def _pending(self) -> QuerySet[OutboxEvent]:
        return (
            OutboxEvent.objects.using(self.using)
            .filter(published_at__isnull=True)
            .order_by("id")
            .only("id", "headers", "body")
        )

    def _stamp(self, ids: list[int]) -> None:
        # published_at__isnull: a row another relay stamped meanwhile (SQLite) keeps its stamp.
        OutboxEvent.objects.using(self.using).filter(pk__in=ids, published_at__isnull=True).update(
            published_at=timezone.now(), attempts=F("attempts") + 1
        )

    def _publish(self, messages: list[OutboundMessage]) -> None:
        """Publish `messages` and wait for their confirms, on the one publisher of this relay.

        When they are not all confirmed in PUBLISH_TIMEOUT they are dropped from the
        publisher (their rows are tried again), which keeps its connection, or keeps
        reconnecting: nothing grows however long the broker stays away.
        """
        if self._publisher is None:
            self._publisher = Publisher(self.settings, role="relay")
        publisher = self._publisher
        try:
            for message in messages:
                publisher.publish(message, wait=False)  # the batch is bounded by OUTBOX_BATCH
            publisher.flush(self.settings.publish_timeout)
        except PublishError as exc:
            publisher.discard_pending()
            if publisher.problem is not None:
                # "N message(s) still unconfirmed" alone hides why (it becomes the row's
                # last_error): name the broker's problem first, keeping the exception's type.
                exc.args = (f"{publisher.problem} ({exc})",)
            raise

    def _record_failure(self, ids: list[int], exc: Exception) -> None:
        # After the batch's transaction rolled back, so that the count survives.
        OutboxEvent.objects.using(self.using).filter(pk__in=ids).update(
            attempts=F("attempts") + 1, last_error=str(exc)[:1000]
        )

    def _prune_now_and_then(self) -> None:
        now = timezone.now()
        if (now.timestamp() - self._last_prune) < _PRUNE_EVERY:
            return
        self._last_prune = now.timestamp()
        cutoff = now - timedelta(seconds=self.settings.outbox_retention)
        pruned, _ = OutboxEvent.objects.using(self.using).filter(published_at__lt=cutoff).delete()
        if pruned:
            logger.info("relay_outbox: pruned %d published row(s) older than OUTBOX_RETENTION", pruned)


def _retry_in(failures: int) -> float:
    """Seconds before a relay tries again after `failures` failed rounds in a row."""
    interval = get_settings().outbox_poll_interval
    return connection.backoff(failures, cap=30 * interval, base=interval)


def _message(row: OutboxEvent) -> OutboundMessage:
    return OutboundMessage(envelope_from_headers(row.headers), bytes(row.body))


def _discard(publisher: Publisher, timeout: float) -> None:
    try:
        publisher.close(timeout)
    except PublishError as exc:
        logger.debug("relay connection closed with %s", exc)


class _WebRelay:
    """The relay thread of a web process: woken after each commit that wrote outbox rows."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._wake = threading.Event()
        self._aliases: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def stop(self, timeout: float) -> None:
        """Finish the batch in hand and end the thread (its rows stay for the next relay)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self, using: str) -> None:
        with self._lock:
            self._aliases.add(using)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="broadcaster-relay", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        relays: dict[str, Relay] = {}
        failures = 0
        blocked = False
        while not self._stopping:
            # Idle until a commit wakes us; poll while another relay holds the turn, and
            # after a failure try again with back-off.
            idle = get_settings().outbox_poll_interval if blocked else None
            self._wake.wait(_retry_in(failures) if failures else idle)
            self._wake.clear()
            if self._stopping:
                break
            with self._lock:
                aliases = sorted(self._aliases)
            results = [_relay_quietly(_current(relays, using)) for using in aliases]
            failures = failures + 1 if not all(ok for ok, _ in results) else 0
            blocked = any(was_blocked for _, was_blocked in results)
        for relay in relays.values():
            relay.close()


def _current(relays: dict[str, Relay], using: str) -> Relay:
    # A relay made before the settings changed (override_settings, tests) is replaced.
    settings = get_settings()
    relay = relays.get(using)
    if relay is None or relay.settings is not settings:
        if relay is not None:
            relay.close()
        relay = relays[using] = Relay(settings, using=using)
    return relay


def _relay_quietly(relay: Relay) -> tuple[bool, bool]:
    """Run `relay` once; return (succeeded, found another relay publishing)."""
    try:
        relay.run_once()
    except Exception:
        # Whatever went wrong, the rows stay: this thread or relay_outbox tries again.
        logger.warning("in-process outbox relay failed; the rows stay for later", exc_info=True)
        return False, False
    finally:
        connections[relay.using].close()
    return True, relay.blocked


_web_relay: _WebRelay | None = None
_web_lock = threading.Lock()


def wake(using: str = DEFAULT_DB_ALIAS) -> None:
    """After a commit that wrote outbox rows: let this process's relay thread publish them."""
    global _web_relay  # noqa: PLW0603 - one relay thread per process
    with _web_lock:
        if _web_relay is None or _web_relay.pid != os.getpid():
            _web_relay = _WebRelay()
        relay = _web_relay
    relay.wake(using)


def stop_web_relay(timeout: float = 10.0) -> None:
    """Stop this process's in-process relay thread, if it runs (tests, orderly shutdowns)."""
    global _web_relay
    with _web_lock:
        relay, _web_relay = _web_relay, None
    if relay is not None and relay.pid == os.getpid():
        relay.stop(timeout)

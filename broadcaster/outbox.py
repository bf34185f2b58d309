"""The transactional outbox: events stored with the business change, published by a relay.

With ``PUBLISH_MODE = "outbox"`` a broadcast signal writes an OutboxEvent row in the
caller's transaction, so the event exists exactly when the change does, whatever the
broker is doing at commit time. A relay publishes unpublished rows in id order with
confirms and stamps them published in the same transaction that locked them
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several relays share the work).
The relay runs in the web process, woken after each commit, and as
``manage.py relay_outbox``.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, DatabaseError, OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from broadcaster import observability
from broadcaster.envelope import OutboundMessage, envelope_from_headers
from broadcaster.exceptions import PublishError
from broadcaster.models import OutboxEvent
from broadcaster.publisher import Publisher
from broadcaster.settings import BroadcasterSettings, get_settings

__all__ = ["Relay", "stop_web_relay", "store", "wake"]

logger = logging.getLogger(__name__)

_PRUNE_EVERY = 60.0  # seconds between deletions of old published rows
_ADVISORY_LOCK_KEY = 0x6272_6F61_6463_7374  # "broadcst": one key for every relay of a database


def store(message: OutboundMessage, using: str) -> None:
    """Write `message` as an outbox row on database `using` (inside the caller's transaction)."""
    OutboxEvent.objects.using(using).create(
        event_id=message.envelope.id,
        event_type=message.envelope.type,
        headers=message.envelope.headers(),
        body=message.body,
    )


class Relay:
    """Publishes the outbox rows of one database with its own broker connection.

    The rows are the source of truth: when the broker does not confirm a batch, the
    transaction rolls back, the relay's connection and its buffer are thrown away, and
    the rows are tried again later (at least once, never lost).
    """

    def __init__(self, settings: BroadcasterSettings | None = None, using: str = DEFAULT_DB_ALIAS) -> None:
        self.settings = settings or get_settings()
        self.using = using
        self.published = 0
        self.blocked = False  # the last batch found another relay publishing
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
                delay = self.settings.outbox_poll_interval * min(2**failures, 30)
                (wake or stop).wait(delay)
                if wake is not None:
                    wake.clear()
        self.close()

    def close(self) -> None:
        """Release the broker connection."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            _discard(publisher, self.settings.shutdown_timeout)

    def _relay_batch(self) -> int:
        ids: list[int] = []
        try:
            with transaction.atomic(using=self.using):
                self.blocked = not _take_turn(self.using)
                if self.blocked:
                    return 0
                rows = list(
                    OutboxEvent.objects.using(self.using)
                    .select_for_update(skip_locked=True)
                    .filter(published_at__isnull=True)
                    .order_by("id")
                    .only("id", "headers", "body")[: self.settings.outbox_batch]
                )
                ids = [row.pk for row in rows]
                if rows:
                    self._publish([_message(row) for row in rows])
                    OutboxEvent.objects.using(self.using).filter(pk__in=ids).update(
                        published_at=timezone.now(), attempts=F("attempts") + 1
                    )
        except PublishError as exc:
            self._record_failure(ids, exc)
            raise
        self.published += len(ids)
        return len(ids)

    def _publish(self, messages: list[OutboundMessage]) -> None:
        publisher = self._publisher or Publisher(self.settings)
        self._publisher = publisher
        try:
            for message in messages:
                publisher.publish(message)
            publisher.flush(self.settings.publish_timeout)
        except PublishError:
            self._publisher = None
            _discard(publisher, 0)
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


def _take_turn(using: str) -> bool:
    """Whether this relay may publish now; one relay per database at a time keeps order.

    On PostgreSQL a transaction-level advisory lock lets any number of relays run while
    rows still leave in commit order; SKIP LOCKED then only guards against a relay that
    ignores the lock. SQLite takes its database write lock first. Other databases rely
    on SKIP LOCKED alone: rows are published once, but run one relay to keep order.
    """
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
            row = cursor.fetchone()
            return bool(row and row[0])
        if connection.vendor == "sqlite":
            # SQLite locks nothing on read; a write that matches no row takes the database's
            # write lock before we read, so two relays never read the same rows.
            try:
                cursor.execute(f"UPDATE {OutboxEvent._meta.db_table} SET id = id WHERE 1 = 0")
            except OperationalError:
                return False
    return True


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
            interval = get_settings().outbox_poll_interval
            retry_in = interval * min(2**failures, 30) if failures else (interval if blocked else None)
            self._wake.wait(retry_in)
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
